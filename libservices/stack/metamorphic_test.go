package stack

import (
	"bytes"
	"flag"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/cache"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/libservices/union"
)

var (
	metaSeeds = flag.Int("meta.seeds", 20, "metamorphic: number of seeds")
	metaOps   = flag.Int("meta.ops", 400, "metamorphic: operations per seed")
)

var metaNames = []string{"a", "b", "c", "d", "d/x", "d/y", "d/e", "d/e/z", "l", "d/l"}

// img is the content of the read-only lower branch, created identically in the
// model before the run.
var img = map[string]string{"a": "image a", "d/x": "image x", "d/e/z": "deep"}

func populate(t *testing.T, fs libservices.FS) {
	t.Helper()
	for _, d := range []string{"d", "d/e"} {
		if err := fs.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, s := range img {
		h, err := fs.Open(p, libservices.O_CREAT|libservices.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		fs.WriteAt(h, []byte(s), 0)
		fs.Close(h)
	}
}

func unionStack(t *testing.T, tiny bool, o cache.Options) libservices.FS {
	var layers []libservices.FS
	for i := 0; i < 2; i++ {
		dir, err := os.MkdirTemp("/dev/shm", "polytropon-meta-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if i == 1 {
			rw, err := passthrough.New(passthrough.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			populate(t, rw)
			rw.CloseFS()
		}
		p, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: i == 1})
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, p)
	}
	size := int64(1 << 20)
	if tiny {
		size = 0
	}
	o.Attrs = 16
	c := cache.New(union.New(layers[0], layers[1]), cache.NewStore(size), o)
	t.Cleanup(func() { c.CloseFS() })
	return c
}

type result struct {
	err  error
	text string
}

func (r result) String() string { return fmt.Sprintf("%v %q", r.err, r.text) }

// step applies one random operation on metaNames to fs; the same rng state
// gives the same op.
func step(fs libservices.FS, rng *rand.Rand) (string, result) { return stepOn(fs, rng, metaNames) }

// stepOn is step over the given names.
func stepOn(fs libservices.FS, rng *rand.Rand, names []string) (string, result) {
	p := names[rng.Intn(len(names))]
	q := names[rng.Intn(len(names))]
	switch op := rng.Intn(14); op {
	case 12:
		mode := uint32(rng.Intn(0o1000))
		return fmt.Sprintf("chmod %s %#o", p, mode), result{err: fs.Setattr(p, &libservices.SetAttr{Valid: libservices.SetMode, Mode: mode})}
	case 13:
		if rng.Intn(2) == 0 {
			v := fmt.Sprint(rng.Intn(100))
			return "setxattr " + p + " " + v, result{err: fs.Setxattr(p, "user.k", []byte(v), 0)}
		}
		buf := make([]byte, 16)
		n, err := fs.Getxattr(p, "user.k", buf)
		return "getxattr " + p, result{err: err, text: string(buf[:n])}
	case 0, 1:
		off := int64(rng.Intn(3 * 4096))
		data := bytes.Repeat([]byte{byte('A' + rng.Intn(26))}, 1+rng.Intn(5000))
		flags := libservices.O_WRONLY | libservices.O_CREAT
		if rng.Intn(4) == 0 {
			flags |= libservices.O_TRUNC
		}
		h, err := fs.Open(p, flags, 0o644)
		if err != nil {
			return "write " + p, result{err: err}
		}
		n, err := fs.WriteAt(h, data, off)
		fs.Close(h)
		return fmt.Sprintf("write %s %d@%d", p, len(data), off), result{err: err, text: fmt.Sprint(n)}
	case 2, 3:
		h, err := fs.Open(p, libservices.O_RDONLY, 0)
		if err != nil {
			return "read " + p, result{err: err}
		}
		buf := make([]byte, 4*4096)
		off := int64(rng.Intn(2 * 4096))
		n, err := fs.ReadAt(h, buf, off)
		fs.Close(h)
		// A digest keeps failure reports readable.
		return fmt.Sprintf("read %s @%d", p, off), result{err: err, text: fmt.Sprintf("%d bytes crc %08x", n, crc32.ChecksumIEEE(buf[:n]))}
	case 4:
		var a libservices.Attr
		err := fs.Lstat(p, &a)
		s := fmt.Sprintf("mode %#o size %d", a.Mode, a.Size)
		if a.IsDir() {
			s = fmt.Sprintf("dir %#o", a.Mode)
		} else if err == nil {
			s += fmt.Sprintf(" nlink %d", a.Nlink)
		}
		return "lstat " + p, result{err: err, text: s}
	case 5:
		return "unlink " + p, result{err: fs.Unlink(p)}
	case 6:
		return "mkdir " + p, result{err: fs.Mkdir(p, 0o750)}
	case 7:
		return "rmdir " + p, result{err: fs.Rmdir(p)}
	case 8:
		return "rename " + p + " " + q, result{err: fs.Rename(p, q)}
	case 9:
		if rng.Intn(2) == 0 {
			return "link " + p + " " + q, result{err: fs.Link(p, q)}
		}
		return "symlink " + p + " " + q, result{err: fs.Symlink(p, q)}
	case 10:
		ents, err := fs.ReadDir(p)
		var names []string
		for _, e := range ents {
			names = append(names, fmt.Sprintf("%s:%o", e.Name, e.Type))
		}
		slices.Sort(names)
		return "readdir " + p, result{err: err, text: fmt.Sprint(names)}
	default:
		size := int64(rng.Intn(9000))
		return fmt.Sprintf("truncate %s %d", p, size), result{err: fs.Setattr(p, &libservices.SetAttr{Valid: libservices.SetSize, Size: size})}
	}
}

// TestMetamorphic runs seeded random operation sequences on stacks and on memfs
// and compares every result. The one permitted divergence is the union's EXDEV
// for renaming a directory with lower contents (OverlayFS semantics): that
// operation is then skipped in the model.
func TestMetamorphic(t *testing.T) {
	stacks := map[string]func(t *testing.T) libservices.FS{
		"CacheUnionPassthrough":     func(t *testing.T) libservices.FS { return unionStack(t, false, cache.Options{}) },
		"TinyCacheUnionPassthrough": func(t *testing.T) libservices.FS { return unionStack(t, true, cache.Options{}) },
		"WriteBackCacheUnionPassthrough": func(t *testing.T) libservices.FS {
			return unionStack(t, true, cache.Options{Policy: "writeback", FlushInterval: -1, DirtyLimit: 8 * cache.PageSize})
		},
		"CacheMemfs": func(t *testing.T) libservices.FS {
			m := memfs.New(memfs.Options{})
			populate(t, m)
			return cache.New(m, cache.NewStore(0), cache.Options{Attrs: 16})
		},
	}
	for name, mk := range stacks {
		t.Run(name, func(t *testing.T) {
			for seed := int64(1); seed <= int64(*metaSeeds); seed++ {
				sys := mk(t)
				model := memfs.New(memfs.Options{})
				populate(t, model)
				var log []string
				for i := 0; i < *metaOps; i++ {
					// Both sides draw the same op from identically seeded generators.
					state := seed*1_000_003 + int64(i)
					what, got := step(sys, rand.New(rand.NewSource(state)))
					if got.err == syscall.EXDEV && len(what) > 6 && what[:6] == "rename" {
						log = append(log, what+" -> EXDEV (skipped)")
						continue
					}
					_, want := step(model, rand.New(rand.NewSource(state)))
					log = append(log, what+" -> "+got.String())
					if got != want {
						if d := os.Getenv("META_DUMP"); d != "" {
							os.WriteFile(d, []byte(strings.Join(log, "\n")), 0o644)
						}
						start := max(0, len(log)-15)
						t.Fatalf("seed %d op %d: %s\n got  %v\n want %v\nrecent ops:\n%s", seed, i, what, got, want,
							fmt.Sprint(log[start:]))
					}
				}
			}
		})
	}
}
