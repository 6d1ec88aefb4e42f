package access_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/access"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/libservices/stack"
)

// scratch makes a directory under /dev/shm for a passthrough branch (not
// t.TempDir: the other callers of the kernel reference must traverse its
// parent, and these stacks are compared with it).
func scratch(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "polytropon-access-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// stacks are the stacks the permission cases run on, each built fresh.
var stacks = []struct {
	name string
	root bool // needs root (passthrough gives files away with chown)
	yaml func(t *testing.T) string
}{
	{"memfs", false, func(*testing.T) string { return "stack:\n  - memfs: {}\n" }},
	{"passthrough", true, func(t *testing.T) string {
		return fmt.Sprintf("stack:\n  - passthrough: {dir: %s}\n", scratch(t))
	}},
	{"union", false, func(*testing.T) string { return "stack:\n  - union: {}\nbranches:\n  - memfs: {}\n  - memfs: {}\n" }},
	{"cache", false, func(*testing.T) string { return "stack:\n  - cache: {size: 1MiB}\n  - memfs: {}\n" }},
	{"default", true, func(t *testing.T) string {
		return fmt.Sprintf("stack:\n  - cache: {size: 4MiB, policy: writeback}\n  - union: {}\nbranches:\n  - passthrough: {dir: %s}\n  - passthrough: {dir: %s}\n",
			scratch(t), scratch(t))
	}},
}

func build(t testing.TB, y string) libservices.FS {
	t.Helper()
	fs, err := stack.BuildYAML([]byte(y), "filesystems[0]", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stack.Close(fs) })
	return fs
}

// TestPermissionsStacks runs the permission cases through a Checker on every
// stack: every errno must be the kernel's (libservices/passthrough runs the same
// cases against it).
func TestPermissionsStacks(t *testing.T) {
	for _, s := range stacks {
		t.Run(s.name, func(t *testing.T) {
			fstest.RunPermissions(t, func(t *testing.T) *fstest.Callers {
				if s.root {
					testenv.Root(t)
				}
				c := access.New(build(t, s.yaml(t)), access.Options{})
				if err := c.ProtectedErr(); err != nil {
					t.Fatal(err)
				}
				return &fstest.Callers{As: func(_ *testing.T, cr peercred.Cred) libservices.FS {
					return c.As(&cr)
				}}
			})
		})
	}
}

// TestConformanceRoot runs the conformance suite through a Checker as root: the
// checks change nothing for a caller with every capability.
func TestConformanceRoot(t *testing.T) {
	for _, s := range stacks {
		t.Run(s.name, func(t *testing.T) {
			fstest.Run(t, func(t *testing.T) libservices.FS {
				if s.root {
					testenv.Root(t)
				}
				root := fstest.Root
				return access.New(build(t, s.yaml(t)), access.Options{}).As(&root)
			})
		})
	}
}
