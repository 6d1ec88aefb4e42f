package stack

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/cache"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/libservices/union"
)

// coherenceNames live in h/, a directory of the upper branch alone, which the
// host changes behind the stack's back.
var coherenceNames = []string{"h/a", "h/b", "h/c", "h/s", "h/s/x", "h/s/y", "h/l"}

// coherenceTimeout is every layer's timeout in TestCoherenceMetamorphic: short,
// so that the test waits little for the bound to pass.
const coherenceTimeout = 20 * time.Millisecond

// hostStep applies one random change to the upper branch's directory on the
// host (dir), and the same change to the model; it reports what it did. The
// host's answer decides: where it fails the model is not changed (the model
// must fail too).
func hostStep(t *testing.T, dir string, model libservices.FS, rng *rand.Rand) string {
	t.Helper()
	p := coherenceNames[rng.Intn(len(coherenceNames))]
	q := coherenceNames[rng.Intn(len(coherenceNames))]
	host := func(name string) string { return filepath.Join(dir, name) }
	var what string
	var herr, merr error
	switch rng.Intn(5) {
	case 0, 1:
		data := bytes.Repeat([]byte{byte('a' + rng.Intn(26))}, 1+rng.Intn(6000))
		what = fmt.Sprintf("host write %s %d bytes", p, len(data))
		if herr = os.WriteFile(host(p), data, 0o644); herr == nil {
			var h libservices.Handle
			if h, merr = model.Open(p, libservices.O_WRONLY|libservices.O_CREAT|libservices.O_TRUNC, 0o644); merr == nil {
				_, merr = model.WriteAt(h, data, 0)
				model.Close(h)
			}
		}
	case 2:
		what = "host unlink " + p
		if herr = os.Remove(host(p)); herr == nil {
			// os.Remove also removes an empty directory.
			var a libservices.Attr
			if model.Lstat(p, &a) == nil && a.IsDir() {
				merr = model.Rmdir(p)
			} else {
				merr = model.Unlink(p)
			}
		}
	case 3:
		what = "host mkdir " + p
		if herr = os.Mkdir(host(p), 0o755); herr == nil {
			merr = model.Mkdir(p, 0o755)
		}
	default:
		what = "host rename " + p + " " + q
		if herr = os.Rename(host(p), host(q)); herr == nil {
			merr = model.Rename(p, q)
		}
	}
	if herr == nil && merr != nil {
		t.Fatalf("%s: the host did it, the model refused: %v", what, merr)
	}
	if herr != nil {
		what += " (refused: " + herr.Error() + ")"
	}
	return what
}

// TestCoherenceMetamorphic checks the coherence contract of the whole default
// stack (cache over union over passthrough, each layer caching what it
// resolved) against memfs: seeded random operations, most through the stack,
// some made directly to the upper branch's directory on the host. The
// contract: what goes through the stack is seen at once; a change made on the
// host is seen once every layer's timeout has passed. So after a host change
// the test waits for the layers' timeouts summed, with a margin, and from then
// on every result of the stack must equal the model's.
func TestCoherenceMetamorphic(t *testing.T) {
	d := libservices.Duration(coherenceTimeout)
	seeds, ops := max(*metaSeeds/6, 2), max(*metaOps*3/10, 50)
	for seed := int64(1); seed <= int64(seeds); seed++ {
		upper, lower := t.TempDir(), t.TempDir()
		if err := os.Mkdir(filepath.Join(upper, "h"), 0o755); err != nil {
			t.Fatal(err)
		}
		var branches []libservices.FS
		for i, dir := range []string{upper, lower} {
			p, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: i == 1, DirRevalidate: &d})
			if err != nil {
				t.Fatal(err)
			}
			branches = append(branches, p)
		}
		u, err := union.NewWithOptions(union.Options{DirCacheTimeout: &d}, branches[0], branches[1])
		if err != nil {
			t.Fatal(err)
		}
		sys := cache.New(u, cache.NewStore(1<<20), cache.Options{AttrTimeout: &d, NegativeTimeout: &d, DirTimeout: &d})
		model := memfs.New(memfs.Options{})
		if err := model.Mkdir("h", 0o755); err != nil {
			t.Fatal(err)
		}
		var log []string
		for i := 0; i < ops; i++ {
			state := seed*1_000_003 + int64(i)
			rng := rand.New(rand.NewSource(state))
			if rng.Intn(4) == 0 {
				// A host change in the same clock tick as the stack's last
				// write to a file could leave its ctime and size as they were
				// (filesystems stamp with a coarse clock), and no cache can
				// tell such a change; the contract assumes the file's times
				// move. Waiting out a tick first makes them move.
				time.Sleep(coherenceTimeout)
				log = append(log, hostStep(t, upper, model, rng))
				// Every layer's bound, one after another, and a margin.
				time.Sleep(4 * coherenceTimeout)
				continue
			}
			what, got := stepOn(sys, rand.New(rand.NewSource(state)), coherenceNames)
			_, want := stepOn(model, rand.New(rand.NewSource(state)), coherenceNames)
			log = append(log, what+" -> "+got.String())
			if got != want {
				start := max(0, len(log)-15)
				t.Fatalf("seed %d op %d: %s\n got  %v\n want %v\nrecent ops:\n%s", seed, i, what, got, want,
					strings.Join(log[start:], "\n"))
			}
		}
		if err := sys.CloseFS(); err != nil {
			t.Fatal(err)
		}
	}
}
