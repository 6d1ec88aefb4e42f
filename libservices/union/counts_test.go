package union

import (
	"os"
	"sync/atomic"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
)

// counting is a branch that counts the calls union makes into it.
type counting struct {
	libservices.FS
	n atomic.Int64
}

func (c *counting) Lstat(p string, a *libservices.Attr) error { c.n.Add(1); return c.FS.Lstat(p, a) }
func (c *counting) Stat(p string, a *libservices.Attr) error  { c.n.Add(1); return c.FS.Stat(p, a) }
func (c *counting) Mkdir(p string, m uint32) error            { c.n.Add(1); return c.FS.Mkdir(p, m) }
func (c *counting) Unlink(p string) error                     { c.n.Add(1); return c.FS.Unlink(p) }
func (c *counting) Rmdir(p string) error                      { c.n.Add(1); return c.FS.Rmdir(p) }
func (c *counting) Rename(o, n string) error                  { c.n.Add(1); return c.FS.Rename(o, n) }
func (c *counting) Link(o, n string) error                    { c.n.Add(1); return c.FS.Link(o, n) }
func (c *counting) Symlink(t, n string) error                 { c.n.Add(1); return c.FS.Symlink(t, n) }
func (c *counting) Readlink(p string) (string, error)         { c.n.Add(1); return c.FS.Readlink(p) }
func (c *counting) ReadDir(p string) ([]libservices.DirEntry, error) {
	c.n.Add(1)
	return c.FS.ReadDir(p)
}
func (c *counting) Setattr(p string, sa *libservices.SetAttr) error {
	c.n.Add(1)
	return c.FS.Setattr(p, sa)
}
func (c *counting) Open(p string, fl int, m uint32) (libservices.Handle, error) {
	c.n.Add(1)
	return c.FS.Open(p, fl, m)
}
func (c *counting) Close(h libservices.Handle) error { c.n.Add(1); return c.FS.Close(h) }

// countFixture is a union of an upper memfs over a lower memfs, each counted:
// dir/up is a file in the upper, dir/low one in the lower, dir is merged.
func countFixture(t *testing.T, u func(up, low libservices.FS) *FS) (*FS, *counting, *counting) {
	t.Helper()
	up, low := memfs.New(memfs.Options{}), memfs.New(memfs.Options{})
	for _, b := range []libservices.FS{up, low} {
		must(t, "mkdir", b.Mkdir("dir", 0o755))
		must(t, "mkdir", b.Mkdir("only", 0o755))
	}
	for _, p := range []struct {
		b libservices.FS
		p string
	}{{up, "dir/up"}, {low, "dir/low"}} {
		h, err := p.b.Open(p.p, libservices.O_CREAT|libservices.O_WRONLY, 0o644)
		must(t, "create", err)
		must(t, "close", p.b.Close(h))
	}
	cu, cl := &counting{FS: up}, &counting{FS: low}
	return u(cu, cl), cu, cl
}

type countResult struct{ lstatUp, openUp, openLow, createUnlink int64 }

// measureCounts runs each operation twice and returns the branch calls of the
// second run: the cost once the union has seen the directory.
func measureCounts(t *testing.T, f *FS, cu, cl *counting) countResult {
	t.Helper()
	calls := func(op func()) int64 {
		op()
		b := cu.n.Load() + cl.n.Load()
		op()
		return cu.n.Load() + cl.n.Load() - b
	}
	var r countResult
	var a libservices.Attr
	r.lstatUp = calls(func() { must(t, "lstat", f.Lstat("dir/up", &a)) })
	openClose := func(p string) func() {
		return func() {
			h, err := f.Open(p, libservices.O_RDONLY, 0)
			must(t, "open "+p, err)
			must(t, "close "+p, f.Close(h))
		}
	}
	r.openUp = calls(openClose("dir/up"))
	r.openLow = calls(openClose("dir/low"))
	r.createUnlink = calls(func() {
		h, err := f.Open("only/new", libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
		must(t, "create", err)
		must(t, "close", f.Close(h))
		must(t, "unlink", f.Unlink("only/new"))
	})
	return r
}

// TestBranchCalls pins the calls union makes into its branches for a known
// name: what the branch needs for the operation itself, and no probe for
// whiteouts, opaque markers or copy-up.
func TestBranchCalls(t *testing.T) {
	f, cu, cl := countFixture(t, func(up, low libservices.FS) *FS { return New(up, low) })
	got := measureCounts(t, f, cu, cl)
	t.Logf("branch calls: %+v", got)
	if os.Getenv("UNION_COUNTS_ONLY") != "" {
		return
	}
	want := countResult{lstatUp: 1, openUp: 2, openLow: 2, createUnlink: 3}
	if got != want {
		t.Fatalf("branch calls %+v, want %+v", got, want)
	}
}
