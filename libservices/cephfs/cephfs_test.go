//go:build ceph

package cephfs

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/libservices/passthrough"
	"github.com/polytropon/polytropon/libservices/union"
)

func clusterOpts(t testing.TB) Options {
	c := testenv.Ceph(t)
	return Options{Conf: c.Conf, ClientID: c.ID, Keyring: c.Keyring}
}

// scratch makes a fresh directory inside the CephFS and returns its path, removed
// (best effort, through a root mount) when t ends.
func scratch(t testing.TB) (Options, string) {
	t.Helper()
	o := clusterOpts(t)
	root, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	rand.Read(b[:])
	dir := "polytropon-test/" + strings.ReplaceAll(t.Name(), "/", "_") + "-" + hex.EncodeToString(b[:])
	if err := root.Mkdir("polytropon-test", 0o755); err != nil && err != error(errEEXIST) {
		t.Fatal(err)
	}
	if err := root.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		removeAll(root, dir)
		root.CloseFS()
	})
	o.Root = "/" + dir
	return o, dir
}

func removeAll(fs libservices.FS, dir string) {
	ents, _ := fs.ReadDir(dir)
	for _, e := range ents {
		p := dir + "/" + e.Name
		if e.Type == syscall.S_IFDIR {
			removeAll(fs, p)
			continue
		}
		fs.Unlink(p)
	}
	fs.Rmdir(dir)
}

func newScratchFS(t *testing.T) libservices.FS {
	o, _ := scratch(t)
	f, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.CloseFS() })
	return f
}

// deviations are the conformance cases CephFS cannot pass, with why.
var deviations = map[string]string{
	"Sparse":     "CephFS keeps no allocation map: st_blocks is derived from the size (the kernel's ceph client reports the same), so a hole counts as allocated",
	"Timestamps": "after a directory's mtime was set back (utimes), creating an entry in it did not move the mtime the client reports (seen with mkdir after the file cases); CephFS keeps a directory's mtime in its lazily propagated dirstat, which is the likely cause (not confirmed)",
}

// TestConformance runs the libservices conformance suite on a CephFS subtree.
func TestConformance(t *testing.T) {
	fstest.RunExcept(t, newScratchFS, deviations)
}

// TestRawMountPointer checks this package's view of go-ceph's MountInfo layout
// against the live mount: ceph_is_mounted through the extracted pointer.
func TestRawMountPointer(t *testing.T) {
	f := newScratchFS(t)
	if !isMounted(f.(*FS).Mount()) {
		t.Fatal("ceph_is_mounted through the raw pointer says not mounted: go-ceph's MountInfo layout changed")
	}
	h, err := f.Open("x", libservices.O_RDWR|libservices.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(h)
	if _, err := f.WriteAt(h, []byte("12345"), 0); err != nil {
		t.Fatal(err)
	}
	var a libservices.Attr
	if err := f.Fstat(h, &a); err != nil || a.Size != 5 || !a.IsRegular() {
		t.Fatalf("fstat through the raw descriptor: %+v, %v", a, err)
	}
}

// TestUnionOverCephfs: a union whose upper branch is a host directory
// (passthrough) and whose lower branch is CephFS, through the conformance suite,
// and a copy-up check that the lower branch is left alone.
func TestUnionOverCephfs(t *testing.T) {
	build := func(t *testing.T) (libservices.FS, libservices.FS) {
		lower := newScratchFS(t)
		upper, err := passthrough.New(passthrough.Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { upper.CloseFS() })
		return union.New(upper, lower), lower
	}
	t.Run("Conformance", func(t *testing.T) {
		fstest.RunExcept(t, func(t *testing.T) libservices.FS { u, _ := build(t); return u }, deviations)
	})
	t.Run("CopyUp", func(t *testing.T) {
		u, lower := build(t)
		writeAll(t, lower, "base", []byte("from ceph"))
		if got := readAll(t, u, "base"); string(got) != "from ceph" {
			t.Fatalf("union reads %q", got)
		}
		h, err := u.Open("base", libservices.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.WriteAt(h, []byte("FROM"), 0); err != nil {
			t.Fatal(err)
		}
		u.Close(h)
		if got := readAll(t, u, "base"); string(got) != "FROM ceph" {
			t.Fatalf("union after write reads %q", got)
		}
		if got := readAll(t, lower, "base"); string(got) != "from ceph" {
			t.Fatalf("the cephfs lower branch changed: %q", got)
		}
	})
}

func writeAll(t testing.TB, fs libservices.FS, name string, data []byte) {
	t.Helper()
	h, err := fs.Open(name, libservices.O_WRONLY|libservices.O_CREAT|libservices.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.WriteAt(h, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := fs.Close(h); err != nil {
		t.Fatal(err)
	}
}

func readAll(t testing.TB, fs libservices.FS, name string) []byte {
	t.Helper()
	h, err := fs.Open(name, libservices.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close(h)
	var a libservices.Attr
	if err := fs.Fstat(h, &a); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, a.Size)
	n, err := fs.ReadAt(h, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

// TestSharedMount: instances with Shared and one Env.Shared use one client; the
// mount lives until the last of them closes.
func TestSharedMount(t *testing.T) {
	o, _ := scratch(t)
	o.Shared = true
	env := &libservices.Env{Shared: &libservices.Shared{}}
	yaml := fmt.Sprintf("stack:\n  - cephfs: {conf: %s, client_id: %s, keyring: %s, root: %s, shared: true, cache_size: 32MiB, cache_inodes: 4096}\n",
		o.Conf, o.ClientID, o.Keyring, o.Root)
	c, err := libservices.ParseFilesystem([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a, err := libservices.Build(c, "fs", env)
	if err != nil {
		t.Fatal(err)
	}
	b, err := libservices.Build(c, "fs", env)
	if err != nil {
		t.Fatal(err)
	}
	private, err := New(o, nil) // no Env.Shared: its own client
	if err != nil {
		t.Fatal(err)
	}
	defer private.CloseFS()
	fa, fb := a.(*FS), b.(*FS)
	if fa.Mount() != fb.Mount() {
		t.Fatal("two shared instances with equal options have different mounts")
	}
	if private.Mount() == fa.Mount() {
		t.Fatal("an instance without Env.Shared got the shared mount")
	}
	writeAll(t, fa, "f", []byte("shared"))
	if got := readAll(t, fb, "f"); string(got) != "shared" {
		t.Fatalf("b reads %q", got)
	}
	if err := fa.CloseFS(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fb, "f"); string(got) != "shared" {
		t.Fatalf("after a closed, b reads %q", got)
	}
	if err := fb.CloseFS(); err != nil {
		t.Fatal(err)
	}
	if fb.sm.refs != 0 || fb.sm.m != nil {
		t.Fatalf("mount still held after the last shared instance closed (refs %d)", fb.sm.refs)
	}
	// The next instance mounts again.
	c2, err := libservices.Build(c, "fs", env)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c2, "f"); string(got) != "shared" {
		t.Fatalf("remounted instance reads %q", got)
	}
	c2.(*FS).CloseFS()
}

// TestConfinement: symlinks whose targets climb above the root, or are absolute,
// resolve inside the FS (libcephfs mounted at the subtree), never to a file
// beside it.
func TestConfinement(t *testing.T) {
	o, dir := scratch(t)
	root, err := New(Options{Conf: o.Conf, ClientID: o.ClientID, Keyring: o.Keyring}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer root.CloseFS()
	if err := root.Mkdir(dir+"/inner", 0o755); err != nil {
		t.Fatal(err)
	}
	writeAll(t, root, dir+"/secret", []byte("secret"))
	o.Root += "/inner"
	f, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.CloseFS()
	for name, target := range map[string]string{"rel": "../secret", "abs": "/secret", "dotdot": "../../../../secret"} {
		if err := f.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Open(name, libservices.O_RDONLY, 0); err == nil {
			t.Errorf("symlink %s -> %s opened a file outside the root", name, target)
		}
	}
}

func TestBadConfig(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"stack:\n  - cephfs: {}\n", "conf: required"},
		{"stack:\n  - cephfs: {conf: /x, root: rel}\n", "root: must be an absolute path"},
		{"stack:\n  - cephfs: {conf: /nonexistent/ceph.conf}\n", "/nonexistent/ceph.conf"},
		{"stack:\n  - cephfs: {conf: /x, cache_size: -1}\n", "cache_size"},
		{"stack:\n  - cephfs: {conf: /x, bogus: 1}\n", "unknown key"},
	} {
		c, err := libservices.ParseFilesystem([]byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		_, err = libservices.Build(c, "fs", nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.yaml, err, tc.want)
		}
	}
}

// TestUnreachableCluster: a conf whose monitor nobody listens on fails New within
// the mount timeout, naming the monitor address.
func TestUnreachableCluster(t *testing.T) {
	c := testenv.Ceph(t)
	src, err := os.ReadFile(c.Conf)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "mon host") {
			l = "mon host = 127.0.0.1:9" // discard port: nothing answers
		}
		out = append(out, l)
	}
	conf := filepath.Join(t.TempDir(), "unreachable.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		f, err := New(Options{Conf: conf, ClientID: c.ID, Keyring: c.Keyring, MountTimeout: 3 * time.Second}, nil)
		if err == nil {
			f.CloseFS()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("mount of an unreachable cluster succeeded")
		}
		if !strings.Contains(err.Error(), "127.0.0.1:9") {
			t.Fatalf("error does not name the monitor address: %v", err)
		}
		t.Logf("error: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("New did not return within 2 minutes with a 3 s mount timeout")
	}
}

// TestOSDRestartKeepsSyncedData restarts the OSD while a writer appends
// fsync'ed records: operations during the restart block and then succeed (or
// fail with an error, never hang), and every record whose Fsync returned nil
// reads back afterwards, through a fresh client.
func TestOSDRestartKeepsSyncedData(t *testing.T) { restartDuringWrites(t, "restart-osd") }

// TestMonRestartKeepsSyncedData is the same with the monitor restarted.
func TestMonRestartKeepsSyncedData(t *testing.T) { restartDuringWrites(t, "restart-mon") }

func restartDuringWrites(t *testing.T, restart string) {
	c := testenv.Ceph(t)
	if c.Dir == "" {
		testenv.SkipOrFail(t, "POLYTROPON_CEPH_DIR unset: cannot restart the OSD")
		return
	}
	o, _ := scratch(t)
	f, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.CloseFS()
	h, err := f.Open("log", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	const rec = 4096
	var (
		mu     sync.Mutex
		synced int // records acknowledged by Fsync
		errs   []error
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, rec)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			fillRec(buf, i)
			if _, err := f.WriteAt(h, buf, int64(i)*rec); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			if err := f.Fsync(h); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			mu.Lock()
			synced = i + 1
			mu.Unlock()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	script := filepath.Join("..", "..", "scripts", "ceph-dev-cluster.sh")
	cmd := exec.Command("bash", script, restart, c.Dir)
	outp, err := cmd.CombinedOutput()
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("%s: %v\n%s", restart, err, outp)
	}
	t.Logf("%s:\n%s", restart, outp)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(3 * time.Minute):
		t.Fatal("writer still blocked 3 minutes after the OSD came back")
	}
	mu.Lock()
	n := synced
	mu.Unlock()
	for _, err := range errs {
		t.Logf("writer error during restart (allowed if clean): %v", err)
		if _, ok := err.(syscall.Errno); !ok {
			t.Fatalf("error %#v is not a syscall.Errno: the contract's errors only", err)
		}
	}
	if n == 0 {
		t.Fatalf("no record was synced around %s", restart)
	}
	f.Close(h)
	// A fresh client reads what the OSD has, not the first client's cache.
	g, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.CloseFS()
	got := readAll(t, g, "log")
	if len(got) < n*rec {
		t.Fatalf("%d records synced, file has %d bytes", n, len(got))
	}
	want := make([]byte, rec)
	for i := 0; i < n; i++ {
		fillRec(want, i)
		if !bytes.Equal(got[i*rec:(i+1)*rec], want) {
			t.Fatalf("synced record %d of %d differs after %s", i, n, restart)
		}
	}
	t.Logf("%d synced records survived %s", n, restart)
}

func fillRec(b []byte, i int) {
	for j := range b {
		b[j] = byte(i*31 + j)
	}
}

// BenchmarkStat: Stat of a file two directories down, caches warm.
func BenchmarkStat(b *testing.B) {
	o, _ := scratch(b)
	f, err := New(o, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.CloseFS()
	for _, d := range []string{"a", "a/b"} {
		if err := f.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	writeAll(b, f, "a/b/f", []byte("x"))
	var a libservices.Attr
	for b.Loop() {
		if err := f.Stat("a/b/f", &a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadAt: 4 KiB reads of a cached file.
func BenchmarkReadAt(b *testing.B) {
	o, _ := scratch(b)
	f, err := New(o, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.CloseFS()
	writeAll(b, f, "f", make([]byte, 1<<20))
	h, err := f.Open("f", libservices.O_RDONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close(h)
	buf := make([]byte, 4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := f.ReadAt(h, buf, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkWriteAt: 4 KiB writes at random block offsets of a 4 MiB file that
// was written and fsynced before, as perf paths' write4k.
func BenchmarkWriteAt(b *testing.B) {
	o, _ := scratch(b)
	f, err := New(o, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.CloseFS()
	h, err := f.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close(h)
	if _, err := f.WriteAt(h, make([]byte, 4<<20), 0); err != nil {
		b.Fatal(err)
	}
	if err := f.Fsync(h); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	x := uint64(1)
	for b.Loop() {
		x = x*6364136223846793005 + 1442695040888963407
		if _, err := f.WriteAt(h, buf, int64(x>>54)*4096); err != nil {
			b.Fatal(err)
		}
	}
}
