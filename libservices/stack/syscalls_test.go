package stack

import (
	"fmt"
	"os"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

// TestStackSyscalls pins the system calls that the default stack (write-back
// cache over a union of a writable and a read-only passthrough branch) makes
// per operation, counted in passthrough, below which nothing else reaches the
// kernel: a stat of a cached name makes none, an open and close of an existing
// file the backing file's open and close, a create, close and unlink at most
// 4. -v prints every count. The figures are issue 20's; a change that makes a
// path resolve twice fails here. Issue 20 also asks for none at all where the
// cache could serve a read-only open from what it knows: that needs the
// backing file opened only at the first read the cache cannot answer, which
// is not done yet (2 today).
func TestStackSyscalls(t *testing.T) {
	upper, lower := t.TempDir(), t.TempDir()
	for _, d := range []string{upper + "/d", lower + "/img"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{upper + "/d/f", lower + "/img/g"} {
		if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var calls passthrough.Syscalls
	stop := passthrough.CountSyscalls(&calls)
	// The default stack with its timeouts at their longest: a test machine
	// that stalls for a second between two calls must not expire what the
	// first one cached.
	yml := fmt.Sprintf(`name: root
stack:
  - cache: {size: 256MiB, policy: writeback, attr_timeout: 1h, negative_timeout: 1h, dir_timeout: 1h}
  - union: {dir_cache_timeout: 1h}
branches:
  - passthrough: {dir: %s, dir_revalidate: 1m}
  - passthrough: {dir: %s, readonly: true, dir_revalidate: 1m}
`, upper, lower)
	fs, err := BuildYAML([]byte(yml), "filesystems[0]", nil)
	stop()
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fs)

	var a libservices.Attr
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	openClose := func(name string, flags int) func() {
		return func() {
			h, err := fs.Open(name, flags, 0)
			must(err)
			must(fs.Close(h))
		}
	}
	for _, tc := range []struct {
		what string
		max  int64
		warm func() // run once before, uncounted
		op   func()
	}{
		{"stat of a cached name", 0, func() { must(fs.Lstat("d/f", &a)) }, func() { must(fs.Lstat("d/f", &a)) }},
		{"stat of a cached name in the image", 0, func() { must(fs.Lstat("img/g", &a)) }, func() { must(fs.Lstat("img/g", &a)) }},
		{"stat of a name cached as missing", 0, func() { _ = fs.Lstat("d/nothing", &a) }, func() { _ = fs.Lstat("d/nothing", &a) }},
		{"read-only open+close of a cached file", 2, openClose("d/f", libservices.O_RDONLY), openClose("d/f", libservices.O_RDONLY)},
		{"read-write open+close of an existing file", 2, openClose("d/f", libservices.O_RDWR), openClose("d/f", libservices.O_RDWR)},
		{"create+close+unlink", 4, func() { must(fs.Lstat("d", &a)) }, func() {
			h, err := fs.Open("d/new", libservices.O_RDWR|libservices.O_CREAT|libservices.O_EXCL, 0o644)
			must(err)
			must(fs.Close(h))
			must(fs.Unlink("d/new"))
		}},
	} {
		tc.warm()
		calls.Reset()
		tc.op()
		n := calls.Total()
		t.Logf("%-45s %d system calls (%s)", tc.what, n, calls.String())
		if n > tc.max {
			t.Errorf("%s: %d system calls (%s), want at most %d", tc.what, n, calls.String(), tc.max)
		}
	}
}
