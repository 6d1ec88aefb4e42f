package service_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/internal/asuser"
	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/service"
)

// openDir makes a directory every caller of the permission cases may traverse
// (t.TempDir's parent is 0700).
func openDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "polytropon-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// permStacks are the stacks the permission cases run on through the service,
// as YAML (stack and branches) given a scratch directory.
var permStacks = []struct {
	name string
	yaml func(dir string) string
}{
	{"memfs", func(string) string { return "    stack: [{memfs: {}}]\n" }},
	{"passthrough", func(dir string) string {
		return fmt.Sprintf("    stack: [{passthrough: {dir: %s}}]\n", mkdirs(dir, "b")[0])
	}},
	{"union", func(string) string { return "    stack: [{union: {}}]\n    branches: [{memfs: {}}, {memfs: {}}]\n" }},
	{"cache", func(string) string { return "    stack: [{cache: {size: 1MiB}}, {memfs: {}}]\n" }},
	{"default", func(dir string) string {
		d := mkdirs(dir, "upper", "lower")
		return fmt.Sprintf("    stack: [{cache: {size: 4MiB, policy: writeback}}, {union: {}}]\n    branches: [{passthrough: {dir: %s}}, {passthrough: {dir: %s}}]\n", d[0], d[1])
	}},
}

func mkdirs(dir string, names ...string) []string {
	var out []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.Mkdir(p, 0o755); err != nil {
			panic(err)
		}
		out = append(out, p)
	}
	return out
}

// permService starts a service with one instance of stack at /m, open to the
// permission cases' callers, with a FUSE mount (allow_other, direct I/O when
// directIO) when fuse is set; it returns the service and the mount point.
func permService(t *testing.T, stackYAML func(string) string, fuse, directIO bool) (*service.Service, string) {
	dir := openDir(t)
	var uids []string
	for _, u := range fstest.PermUIDs() {
		uids = append(uids, fmt.Sprint(u))
	}
	y := fmt.Sprintf("socket: %s/s.sock\nspin: 0\nallow_uids: [%s]\nfilesystems:\n  - name: m\n    mount: /m\n",
		dir, strings.Join(uids, ", "))
	mp := ""
	if fuse {
		mp = mkdirs(dir, "mnt")[0]
		y += fmt.Sprintf("    fuse_mounts: [{path: %s, allow_other: true, direct_io: %v}]\n", mp, directIO)
	}
	y += stackYAML(dir)
	cfg, err := service.ParseConfig([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, *cfg)
	// Connecting needs write permission on the socket.
	if err := os.Chmod(s.Socket(), 0o777); err != nil {
		t.Fatal(err)
	}
	return s, mp
}

// dialAs connects to s as c, under prefix: from a thread switched to c's
// identity, which SO_PEERCRED records at connect; a root connection from an
// ordinary thread.
func dialAs(t testing.TB, s *service.Service, c peercred.Cred, prefix string) libservices.FS {
	if c.UID == 0 && c.Caps != 0 {
		return dialFS(t, s, prefix)
	}
	th, err := asuser.Start(c)
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	var fs libservices.FS
	th.Do(func() { fs, err = fslib.DialFS(fslib.DialOptions{Socket: s.Socket(), Prefix: prefix}) })
	if err != nil {
		t.Fatalf("dial as uid %d: %v", c.UID, err)
	}
	t.Cleanup(func() { fs.(libservices.Closer).CloseFS() })
	return fs
}

// TestPermissionsDirect runs the permission cases over the direct path, each
// caller a client connected from its own identity, on every stack: the errnos
// must be the kernel's.
func TestPermissionsDirect(t *testing.T) {
	testenv.Root(t)
	for _, st := range permStacks {
		t.Run(st.name, func(t *testing.T) {
			fstest.RunPermissions(t, func(t *testing.T) *fstest.Callers {
				s, _ := permService(t, st.yaml, false, false)
				return &fstest.Callers{RootCapsOnly: true, As: func(t *testing.T, c peercred.Cred) libservices.FS {
					return dialAs(t, s, c, "/m")
				}}
			})
		})
	}
}

// TestPermissionsFUSE runs the permission cases through a service's FUSE mount
// (allow_other), with the page cache and with direct I/O, every call made by a
// thread with the caller's identity, on every stack.
func TestPermissionsFUSE(t *testing.T) {
	testenv.FUSE(t)
	for _, directIO := range []bool{false, true} {
		for _, st := range permStacks {
			t.Run(fmt.Sprintf("%s/direct_io=%v", st.name, directIO), func(t *testing.T) {
				fstest.RunPermissions(t, func(t *testing.T) *fstest.Callers {
					_, mp := permService(t, st.yaml, true, directIO)
					over := overMount(t, mp)
					return &fstest.Callers{As: func(t *testing.T, c peercred.Cred) libservices.FS {
						th, err := asuser.Start(c)
						if err != nil {
							t.Fatal(err)
						}
						t.Cleanup(th.Close)
						return asuser.FS(over, th)
					}}
				})
			})
		}
	}
}
