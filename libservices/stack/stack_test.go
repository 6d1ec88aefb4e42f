package stack

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/cache"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/libservices/union"
)

func exampleYAML(upper, lower string) string {
	return fmt.Sprintf(`name: root
stack:
  - cache: {size: 256MiB, policy: writeback}
  - union: {}
branches:
  - passthrough: {dir: %s}
  - passthrough: {dir: %s, readonly: true}
`, upper, lower)
}

func TestBuildExample(t *testing.T) {
	upper, lower := t.TempDir(), t.TempDir()
	if err := os.WriteFile(lower+"/image-file", []byte("from the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, err := BuildYAML([]byte(exampleYAML(upper, lower)), "filesystems[0]", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fs)
	c, ok := fs.(*cache.FS)
	if !ok {
		t.Fatalf("top layer is %T", fs)
	}
	u, ok := c.Unwrap().(*union.FS)
	if !ok {
		t.Fatalf("second layer is %T", c.Unwrap())
	}
	br := u.Unwrap()
	if len(br) != 2 {
		t.Fatalf("%d branches", len(br))
	}
	for _, b := range br {
		if _, ok := b.(*passthrough.FS); !ok {
			t.Fatalf("branch %T", b)
		}
	}
	h, err := fs.Open("image-file", libservices.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := fs.ReadAt(h, buf, 0)
	fs.Close(h)
	if string(buf[:n]) != "from the image" {
		t.Fatalf("read %q", buf[:n])
	}
	if err := fs.Unlink("image-file"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lower + "/image-file"); err != nil {
		t.Fatal("the read-only branch was modified")
	}
}

func TestSharedCacheStore(t *testing.T) {
	env := &libservices.Env{Shared: &libservices.Shared{}}
	y := "stack:\n  - cache: {size: 1MiB, shared: image}\n  - memfs: {}\n"
	a, err := BuildYAML([]byte(y), "filesystems[0]", env)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildYAML([]byte(y), "filesystems[1]", env)
	if err != nil {
		t.Fatal(err)
	}
	if a.(*cache.FS) == b.(*cache.FS) {
		t.Fatal("two builds returned one FS")
	}
	if a.(*cache.FS).Store() != b.(*cache.FS).Store() {
		t.Fatal("caches naming one shared store got two stores")
	}
	c, err := BuildYAML([]byte("stack:\n  - cache: {size: 1MiB}\n  - memfs: {}\n"), "filesystems[2]", env)
	if err != nil {
		t.Fatal(err)
	}
	if c.(*cache.FS).Store() == a.(*cache.FS).Store() {
		t.Fatal("a cache without shared: got the shared store")
	}
	if got := libservices.Registered(); !slices.Equal(got, []string{"cache", "cephfs", "memfs", "passthrough", "union"}) {
		t.Fatalf("registered: %q", got)
	}
}

func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ yaml, want string }{
		{"stack:\n  - cache: {size: 12XB}\n  - memfs: {}\n", `filesystems[0].stack[0].cache.size: bad size "12XB"`},
		{"stack:\n  - cache: {sise: 1MiB}\n  - memfs: {}\n", `filesystems[0].stack[0].cache.sise: unknown key`},
		{"stack:\n  - cache: {policy: lru}\n  - memfs: {}\n", `filesystems[0].stack[0].cache: policy: unknown policy "lru"`},
		{"stack:\n  - cache: {flush_interval: soon}\n  - memfs: {}\n", `filesystems[0].stack[0].cache.flush_interval:`},
		{"stack:\n  - cache: {size: 1TiB}\n  - memfs: {}\n", `filesystems[0].stack[0].cache: size: must be between 64KiB and 64GiB`},
		{"stack:\n  - kache: {}\n", `filesystems[0].stack[0]: unknown libservice "kache"`},
		{"stack:\n  - union: {}\n", `filesystems[0].stack[0].union: needs branches below it`},
		{"stack:\n  - cache: {}\n", `filesystems[0].stack[0].cache: wraps exactly one filesystem, got 0`},
		{"stack:\n  - memfs: {}\n  - memfs: {}\n", `filesystems[0].stack[0].memfs: wraps nothing`},
		{"stack:\n  - union: {}\nbranches:\n  - passthrough: {dir: /nonexistent/x}\n", `filesystems[0].branches[0].passthrough: passthrough: open /nonexistent/x`},
		{"stack:\n  - union: {}\nbranches:\n  - passthrough: {readonly: true}\n", `filesystems[0].branches[0].passthrough: dir: required`},
		{"stack:\n  - union: {}\nbranches:\n  - passthrough: {dir: " + dir + ", readonly: maybe}\n", `filesystems[0].branches[0].passthrough.readonly:`},
		{"stack:\n  - union: {}\nbranches:\n  - cache: {}\n", `filesystems[0].branches[0].cache: a branch must be a leaf`},
		{"stack:\n  - memfs: {size: -1}\n", `filesystems[0].stack[0].memfs.size: bad size "-1"`},
		{"stack:\n  - memfs: []\n", `filesystems[0].stack[0].memfs: options must be a mapping`},
		{"stack: []\n", `filesystems[0].stack: a filesystem needs at least one layer`},
		{"stack:\n  - memfs: {}\n    cache: {}\n", `a layer is a mapping with one key`},
		{"stak:\n  - memfs: {}\n", `field stak not found`},
		{"stack:\n  - memfs: {size: 1MiB, size: 2MiB}\n", `filesystems[0].stack[0].memfs.size: duplicate key`},
	} {
		fs, err := BuildYAML([]byte(c.yaml), "filesystems[0]", nil)
		if err == nil {
			Close(fs)
			t.Errorf("%q: built", c.yaml)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %q, want it to contain %q", c.yaml, err, c.want)
		}
	}
}

// TestConformanceBuiltStacks runs the suite on stacks built from YAML.
func TestConformanceBuiltStacks(t *testing.T) {
	t.Run("CacheOverMemfs", func(t *testing.T) {
		fstest.Run(t, func(t *testing.T) libservices.FS {
			fs, err := BuildYAML([]byte("stack:\n  - cache: {size: 1MiB}\n  - memfs: {size: 2GiB}\n"), "fs", nil)
			if err != nil {
				t.Fatal(err)
			}
			return fs
		})
	})
}

// FuzzBuildYAML: any configuration is built or refused with an error, never a
// panic. Branch directories are confined to a scratch directory by rejecting
// any other "dir".
func FuzzBuildYAML(f *testing.F) {
	for _, s := range []string{
		"stack:\n  - cache: {size: 1MiB, policy: writeback, flush_interval: -1s}\n  - memfs: {}\n",
		"stack:\n  - union: {}\nbranches:\n  - memfs: {}\n  - memfs: {size: 1MiB}\n",
		"stack:\n  - cache: {size: 12XB}\n",
		"stack: [{memfs: {inodes: -1}}]",
		"stack:\n  - memfs: {size: [1]}\n",
		"branches: 3\n",
		"{",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.Contains(s, "passthrough") || strings.Contains(s, "cephfs") {
			return // keep the fuzzer away from host directories and clusters
		}
		fs, err := BuildYAML([]byte(s), "fs", nil)
		if err == nil {
			if err := Close(fs); err != nil {
				t.Fatalf("close: %v", err)
			}
		}
	})
}
