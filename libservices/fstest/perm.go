package fstest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/libservices"
)

// The permission cases: the kernel's access rules for callers other than the
// FS's owner, each case on a fresh FS reached as several callers. Their expected
// errnos are Linux's: libservices/passthrough runs them against the kernel itself
// (every call made by a thread switched to the caller's identity, see
// internal/asuser), and libservices/access and the service run them through the
// permission checker on every stack, over the direct path and a FUSE mount.
//
// The callers: Root (uid 0 with every capability the test process holds); Alice,
// Bob and Carol, unprivileged, Alice and Bob both in the group Staff; Root0 (uid
// 0 and no capability: privilege comes from capabilities, never from uid 0);
// Fowner, Chowner and Searcher (unprivileged with CAP_FOWNER, CAP_CHOWN,
// CAP_DAC_READ_SEARCH).

// Staff is the group Alice and Bob share.
const Staff = 3000

// Callers of the permission cases.
var (
	Root     = peercred.Cred{UID: 0, GID: 0, Caps: processCaps()}
	Alice    = peercred.Cred{UID: 2001, GID: 2001, Groups: []uint32{2001, Staff}}
	Bob      = peercred.Cred{UID: 2002, GID: 2002, Groups: []uint32{2002, Staff}}
	Carol    = peercred.Cred{UID: 2003, GID: 2003, Groups: []uint32{2003}}
	Root0    = peercred.Cred{UID: 0, GID: 0}
	Fowner   = peercred.Cred{UID: 2004, GID: 2004, Caps: 1 << peercred.CapFowner}
	Chowner  = peercred.Cred{UID: 2005, GID: 2005, Caps: 1 << peercred.CapChown}
	Searcher = peercred.Cred{UID: 2006, GID: 2006, Caps: 1 << peercred.CapDacReadSearch}
)

// PermUIDs are the uids of the unprivileged callers (for a service's
// allow_uids).
func PermUIDs() []uint32 {
	return []uint32{Alice.UID, Bob.UID, Carol.UID, Fowner.UID, Chowner.UID, Searcher.UID}
}

// processCaps is the test process's effective capability set: Root's.
func processCaps() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			c, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return c
		}
	}
	return 0
}

// Callers is one FS reached as several callers.
type Callers struct {
	// As returns the FS as the caller c sees it. It is called once per caller and
	// case; Root sets every case up.
	As func(t *testing.T, c peercred.Cred) libservices.FS
	// RootCapsOnly says that the path can carry no capability set but Root's full
	// one and none (the direct path: a connection from a thread switched to
	// another identity gets no capabilities, one from uid 0 all of the
	// process's); cases that need Root0, Fowner, Chowner or Searcher are skipped.
	RootCapsOnly bool
}

// NewCallers returns a fresh, empty FS for one case, reachable as any caller.
type NewCallers func(t *testing.T) *Callers

type permCase struct {
	name string
	caps bool // needs callers with capability sets other than Root's and none
	fn   func(t *testing.T, p *perms)
}

var permCases = []permCase{
	{"AccessBits", false, testAccessBits},
	{"AccessBitsCaps", true, testAccessBitsCaps},
	{"Search", false, testSearch},
	{"Sticky", false, testSticky},
	{"StickyCaps", true, testStickyCaps},
	{"SetgidDir", false, testSetgidDir},
	{"Chmod", false, testChmod},
	{"ChmodCaps", true, testChmodCaps},
	{"Chown", false, testChown},
	{"ChownCaps", true, testChownCaps},
	{"Utimes", false, testUtimes},
	{"KillPriv", false, testKillPriv},
	{"Xattr", false, testXattrPerm},
	{"Noatime", false, testNoatime},
	{"Hardlinks", false, testHardlinksPerm},
	{"Create", false, testCreatePerm},
	{"RenameDir", false, testRenameDir},
	{"ProtectedSymlinks", false, testProtectedSymlinks},
}

// RunPermissions runs the permission cases, each in its own subtest on a fresh
// FS.
func RunPermissions(t *testing.T, newCallers NewCallers) {
	for _, c := range permCases {
		t.Run(c.name, func(t *testing.T) {
			cs := newCallers(t)
			if c.caps && cs.RootCapsOnly {
				t.Skip("the path carries no capability set but Root's and none")
			}
			p := &perms{t: t, cs: cs, fs: map[uint32]libservices.FS{}}
			p.root = p.as(Root)
			// The FS root belongs to root and is open to all: each case makes its
			// own directories.
			ok(t, "chown /", p.root.Setattr(".", &libservices.SetAttr{Valid: libservices.SetUid | libservices.SetGid}))
			ok(t, "chmod /", p.root.Setattr(".", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o755}))
			c.fn(t, p)
		})
	}
}

// perms is one case's FS and its callers.
type perms struct {
	t    *testing.T
	cs   *Callers
	root libservices.FS
	mu   sync.Mutex
	fs   map[uint32]libservices.FS // by uid; one Cred per uid
	// sysctls are the fs.* values the case read (see sysctlsUnchanged).
	sysctls map[string]int
}

func (p *perms) as(c peercred.Cred) libservices.FS {
	key := c.UID
	if c.UID == 0 && c.Caps == 0 {
		key = 1<<32 - 1 // Root0, beside Root
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if fs, ok := p.fs[key]; ok {
		return fs
	}
	fs := p.cs.As(p.t, c)
	p.fs[key] = fs
	return fs
}

// mk makes a directory (mode ending in 0o40000 bits is not needed) or, with
// data != nil, a file, as root, then gives it uid:gid and mode.
func (p *perms) mk(name string, mode, uid, gid uint32, data []byte) {
	p.t.Helper()
	if data == nil {
		ok(p.t, "mkdir "+name, p.root.Mkdir(name, 0o700))
	} else {
		writeFile(p.t, p.root, name, data, 0o600)
	}
	ok(p.t, "chown "+name, p.root.Setattr(name, &libservices.SetAttr{Valid: libservices.SetUid | libservices.SetGid, Uid: uid, Gid: gid}))
	ok(p.t, "chmod "+name, p.root.Setattr(name, &libservices.SetAttr{Valid: libservices.SetMode, Mode: mode}))
	if a := lstat(p.t, p.root, name); a.Mode&0o7777 != mode || a.Uid != uid || a.Gid != gid {
		p.t.Fatalf("set up %s: mode %#o %d:%d, want %#o %d:%d", name, a.Mode&0o7777, a.Uid, a.Gid, mode, uid, gid)
	}
}

func (p *perms) dir(name string, mode uint32, owner peercred.Cred, gid uint32) {
	p.t.Helper()
	p.mk(name, mode, owner.UID, gid, nil)
}

func (p *perms) file(name string, mode uint32, owner peercred.Cred, gid uint32) {
	p.t.Helper()
	p.mk(name, mode, owner.UID, gid, []byte("data"))
}

// want checks that op, made by caller who, got errno e (0: success).
func (p *perms) want(who string, what string, err error, e syscall.Errno) {
	p.t.Helper()
	if got, _ := err.(syscall.Errno); got != e || e == 0 && err != nil {
		p.sysctlsUnchanged()
	}
	errno(p.t, who+": "+what, err, e)
}

// sysctl reads /proc/sys/fs/NAME, the kernel's behaviour the case expects,
// and remembers it.
func (p *perms) sysctl(name string) int {
	p.t.Helper()
	v := sysctl(p.t, name)
	if p.sysctls == nil {
		p.sysctls = map[string]int{}
	}
	p.sysctls[name] = v
	return v
}

// sysctlsUnchanged fails the case with the reason when a sysctl it read has
// changed since: another process changed the host's behaviour under it.
func (p *perms) sysctlsUnchanged() {
	p.t.Helper()
	for name, v := range p.sysctls {
		if now := sysctl(p.t, name); now != v {
			p.t.Fatalf("fs.%s changed from %d to %d during the case: something else on this host changes it", name, v, now)
		}
	}
}

// attr checks the mode (permission bits) and owner of name, seen by root.
func (p *perms) attr(name string, mode, uid, gid uint32) {
	p.t.Helper()
	a := lstat(p.t, p.root, name)
	if a.Mode&0o7777 != mode || a.Uid != uid || a.Gid != gid {
		p.t.Fatalf("%s: mode %#o owner %d:%d, want %#o %d:%d", name, a.Mode&0o7777, a.Uid, a.Gid, mode, uid, gid)
	}
}

func open(fs libservices.FS, name string, flags int) error {
	h, err := fs.Open(name, flags, 0o644)
	if err == nil {
		fs.Close(h)
	}
	return err
}

func openCreate(fs libservices.FS, name string, mode uint32) error {
	h, err := fs.Open(name, libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, mode)
	if err == nil {
		err = fs.Close(h)
	}
	return err
}

func chmod(fs libservices.FS, name string, mode uint32) error {
	return fs.Setattr(name, &libservices.SetAttr{Valid: libservices.SetMode, Mode: mode})
}

func chown(fs libservices.FS, name string, uid, gid uint32) error {
	return fs.Setattr(name, &libservices.SetAttr{Valid: libservices.SetUid | libservices.SetGid, Uid: uid, Gid: gid})
}

func chgrp(fs libservices.FS, name string, gid uint32) error {
	return fs.Setattr(name, &libservices.SetAttr{Valid: libservices.SetGid, Gid: gid})
}

// classBits is the mode class the kernel checks for c on a file of mode,
// owner and group (acl_permission_check): owner, else group member, else other.
func classBits(c peercred.Cred, mode, uid, gid uint32) uint32 {
	if c.UID == uid {
		return mode >> 6 & 7
	}
	if c.GID == gid || slices.Contains(c.Groups, gid) {
		return mode >> 3 & 7
	}
	return mode & 7
}

func testAccessBits(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	modes := []uint32{0o600, 0o640, 0o604, 0o060, 0o006, 0o000, 0o644, 0o664, 0o422, 0o246}
	for _, m := range modes {
		p.file(fmt.Sprintf("d/f%03o", m), m, Alice, Staff)
	}
	type acc struct {
		name  string
		flags int
		need  uint32 // r=4 w=2
	}
	accs := []acc{
		{"O_RDONLY", libservices.O_RDONLY, 4},
		{"O_WRONLY", libservices.O_WRONLY, 2},
		{"O_RDWR", libservices.O_RDWR, 6},
		{"O_RDONLY|O_TRUNC", libservices.O_RDONLY | libservices.O_TRUNC, 6},
		{"O_WRONLY|O_APPEND", libservices.O_WRONLY | libservices.O_APPEND, 2},
	}
	for _, who := range []struct {
		name string
		c    peercred.Cred
	}{{"alice (owner)", Alice}, {"bob (group)", Bob}, {"carol (other)", Carol}, {"root", Root}} {
		fs := p.as(who.c)
		for _, m := range modes {
			name := fmt.Sprintf("d/f%03o", m)
			bits := classBits(who.c, m, Alice.UID, Staff)
			for _, a := range accs {
				want := syscall.Errno(0)
				if who.c.UID != 0 && bits&a.need != a.need {
					want = syscall.EACCES
				}
				p.want(who.name, fmt.Sprintf("open %s (mode %#o) %s", name, m, a.name), open(fs, name, a.flags), want)
			}
			// A stat needs no permission on the file itself.
			var at libservices.Attr
			p.want(who.name, "stat "+name, fs.Stat(name, &at), 0)
		}
	}
	// Directories: read lists, execute searches, each alone.
	p.dir("d/x700", 0o700, Alice, Staff)
	p.dir("d/x300", 0o300, Alice, Staff)
	p.dir("d/x600", 0o600, Alice, Staff)
	p.dir("d/x750", 0o750, Alice, Staff)
	for _, d := range []string{"d/x700", "d/x300", "d/x600", "d/x750"} {
		p.file(d+"/f", 0o644, Alice, Staff)
	}
	alice, bob, carol := p.as(Alice), p.as(Bob), p.as(Carol)
	var a libservices.Attr
	for _, c := range []struct {
		who  string
		fs   libservices.FS
		dir  string
		list syscall.Errno
		walk syscall.Errno
	}{
		{"alice", alice, "d/x700", 0, 0},
		{"bob", bob, "d/x700", syscall.EACCES, syscall.EACCES},
		{"alice", alice, "d/x300", syscall.EACCES, 0},
		{"alice", alice, "d/x600", 0, syscall.EACCES},
		{"bob", bob, "d/x750", 0, 0},
		{"carol", carol, "d/x750", syscall.EACCES, syscall.EACCES},
	} {
		_, err := c.fs.ReadDir(c.dir)
		p.want(c.who, "readdir "+c.dir, err, c.list)
		p.want(c.who, "open "+c.dir+" O_DIRECTORY", open(c.fs, c.dir, libservices.O_RDONLY|libservices.O_DIRECTORY), c.list)
		p.want(c.who, "lstat "+c.dir+"/f", c.fs.Lstat(c.dir+"/f", &a), c.walk)
		p.want(c.who, "lstat "+c.dir, c.fs.Lstat(c.dir, &a), 0)
	}
	// Writing a directory is never allowed through open, whatever the bits.
	p.want("alice", "open d/x700 O_WRONLY", open(alice, "d/x700", libservices.O_WRONLY), syscall.EISDIR)
}

func testAccessBitsCaps(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	p.file("d/alice600", 0o600, Alice, Staff)
	p.file("d/root600", 0o600, Root, 0)
	p.dir("d/alice700", 0o700, Alice, Staff)
	p.file("d/alice700/f", 0o600, Alice, Staff)
	root0, searcher, fowner := p.as(Root0), p.as(Searcher), p.as(Fowner)
	var a libservices.Attr
	// Root0 is uid 0 without capabilities: the owner of root's files, a
	// stranger to Alice's.
	p.want("root0", "open alice600", open(root0, "d/alice600", libservices.O_RDONLY), syscall.EACCES)
	p.want("root0", "open root600 rdwr", open(root0, "d/root600", libservices.O_RDWR), 0)
	_, err := root0.ReadDir("d/alice700")
	p.want("root0", "readdir alice700", err, syscall.EACCES)
	p.want("root0", "lstat through alice700", root0.Lstat("d/alice700/f", &a), syscall.EACCES)
	// CAP_DAC_READ_SEARCH reads and searches, never writes.
	p.want("searcher", "open alice600 read", open(searcher, "d/alice600", libservices.O_RDONLY), 0)
	p.want("searcher", "open alice600 write", open(searcher, "d/alice600", libservices.O_WRONLY), syscall.EACCES)
	_, err = searcher.ReadDir("d/alice700")
	p.want("searcher", "readdir alice700", err, 0)
	p.want("searcher", "open through alice700", open(searcher, "d/alice700/f", libservices.O_RDONLY), 0)
	p.want("searcher", "create in alice700", openCreate(searcher, "d/alice700/new", 0o644), syscall.EACCES)
	// CAP_FOWNER is no access to the data.
	p.want("fowner", "open alice600", open(fowner, "d/alice600", libservices.O_RDONLY), syscall.EACCES)
}

func testSearch(t *testing.T, p *perms) {
	p.dir("a", 0o755, Root, 0)
	p.dir("a/b", 0o700, Carol, Carol.GID)
	p.dir("a/b/c", 0o777, Carol, Carol.GID)
	p.file("a/b/c/f", 0o666, Root, 0)
	ok(t, "symlink lnk", p.root.Symlink("a/b", "lnk"))
	ok(t, "symlink abs", p.root.Symlink("/a/b/c", "abs"))
	ok(t, "symlink lf", p.root.Symlink("a/b/c/f", "lf"))
	ok(t, "symlink up", p.root.Symlink("../a/b/c", "a/up"))
	bob, carol := p.as(Bob), p.as(Carol)
	var a libservices.Attr
	buf := make([]byte, 8)
	for _, c := range []struct {
		who  string
		fs   libservices.FS
		want syscall.Errno
	}{{"bob", bob, syscall.EACCES}, {"carol", carol, 0}} {
		p.want(c.who, "lstat a/b/c/f", c.fs.Lstat("a/b/c/f", &a), c.want)
		p.want(c.who, "stat a/b/c/f", c.fs.Stat("a/b/c/f", &a), c.want)
		p.want(c.who, "open a/b/c/f", open(c.fs, "a/b/c/f", libservices.O_RDWR), c.want)
		p.want(c.who, "lstat through a symlink to the directory", c.fs.Lstat("lnk/c/f", &a), c.want)
		p.want(c.who, "stat a link whose target is below it", c.fs.Stat("abs", &a), c.want)
		p.want(c.who, "stat a link to the file", c.fs.Stat("lf", &a), c.want)
		p.want(c.who, "lstat the link itself", c.fs.Lstat("lf", &a), 0)
		p.want(c.who, "lstat through a relative link with ..", c.fs.Lstat("a/up/f", &a), c.want)
		p.want(c.who, "chmod a/b/c/f", chmod(c.fs, "a/b/c/f", 0o666), map[bool]syscall.Errno{true: syscall.EACCES, false: syscall.EPERM}[c.want != 0])
		_, err := c.fs.ReadDir("a/b/c")
		p.want(c.who, "readdir a/b/c", err, c.want)
		_, err = c.fs.Getxattr("a/b/c/f", "user.x", buf)
		p.want(c.who, "getxattr a/b/c/f", err, map[bool]syscall.Errno{true: syscall.EACCES, false: syscall.ENODATA}[c.want != 0])
		_, err = c.fs.Readlink("a/b/c/f")
		p.want(c.who, "readlink a/b/c/f", err, map[bool]syscall.Errno{true: syscall.EACCES, false: syscall.EINVAL}[c.want != 0])
		// The walk's permission error comes before what lies beyond it.
		p.want(c.who, "lstat a missing file", c.fs.Lstat("a/b/c/missing", &a), map[bool]syscall.Errno{true: syscall.EACCES, false: syscall.ENOENT}[c.want != 0])
		p.want(c.who, "lstat through a file", c.fs.Lstat("a/b/c/f/x", &a), map[bool]syscall.Errno{true: syscall.EACCES, false: syscall.ENOTDIR}[c.want != 0])
	}
	p.want("bob", "mkdir below", bob.Mkdir("a/b/c/new", 0o755), syscall.EACCES)
	p.want("bob", "create below", openCreate(bob, "a/b/c/new", 0o644), syscall.EACCES)
	p.want("bob", "unlink below", bob.Unlink("a/b/c/f"), syscall.EACCES)
	p.want("bob", "rename below", bob.Rename("a/b/c/f", "a/x"), syscall.EACCES)
	p.want("bob", "link from below", bob.Link("a/b/c/f", "x"), syscall.EACCES)
	p.want("bob", "symlink below", bob.Symlink("x", "a/b/c/l"), syscall.EACCES)
	p.want("carol", "mkdir below", carol.Mkdir("a/b/c/new", 0o755), 0)
	p.want("carol", "rename below", carol.Rename("a/b/c/new", "a/b/c/new2"), 0)
}

func testSticky(t *testing.T, p *perms) {
	p.dir("s", 0o1777, Carol, Carol.GID)
	alice, bob, carol := p.as(Alice), p.as(Bob), p.as(Carol)
	// Files made through the FS belong to their maker.
	p.want("alice", "create s/a", openCreate(alice, "s/a", 0o666), 0)
	p.want("alice", "mkdir s/ad", alice.Mkdir("s/ad", 0o777), 0)
	p.want("alice", "create s/a3", openCreate(alice, "s/a3", 0o666), 0)
	p.want("bob", "create s/b", openCreate(bob, "s/b", 0o666), 0)
	p.want("bob", "create s/b2", openCreate(bob, "s/b2", 0o666), 0)
	p.attr("s/a", 0o666, Alice.UID, Alice.GID)
	p.attr("s/ad", 0o777, Alice.UID, Alice.GID)
	p.attr("s/b", 0o666, Bob.UID, Bob.GID)
	p.want("bob", "unlink alice's file", bob.Unlink("s/a"), syscall.EPERM)
	p.want("bob", "rmdir alice's directory", bob.Rmdir("s/ad"), syscall.EPERM)
	p.want("bob", "rename alice's file", bob.Rename("s/a", "s/x"), syscall.EPERM)
	p.want("bob", "rename his own over alice's", bob.Rename("s/b", "s/a"), syscall.EPERM)
	p.want("bob", "rename his own away", bob.Rename("s/b", "s/b1"), 0)
	p.want("bob", "rename his own back", bob.Rename("s/b1", "s/b"), 0)
	p.want("bob", "setxattr on the sticky directory", bob.Setxattr("s", "user.x", []byte("v"), 0), syscall.EPERM)
	p.want("carol", "setxattr on her sticky directory", carol.Setxattr("s", "user.x", []byte("v"), 0), 0)
	// Writing a file in a sticky directory is the file's business.
	p.want("bob", "write alice's 0666 file", open(bob, "s/a", libservices.O_WRONLY), 0)
	p.want("alice", "rename her own", alice.Rename("s/a", "s/a2"), 0)
	p.want("alice", "unlink her own", alice.Unlink("s/a2"), 0)
	p.want("carol", "unlink in her directory", carol.Unlink("s/b"), 0)
	p.want("carol", "rmdir in her directory", carol.Rmdir("s/ad"), 0)
	p.want("carol", "rename in her directory", carol.Rename("s/b2", "s/c"), 0)
	p.want("alice", "unlink bob's (now at s/c)", alice.Unlink("s/c"), syscall.EPERM)
	p.want("root", "unlink alice's", p.root.Unlink("s/a3"), 0)
	// Without the sticky bit, write permission on the directory is enough.
	p.dir("n", 0o777, Carol, Carol.GID)
	p.want("alice", "create n/a", openCreate(alice, "n/a", 0o600), 0)
	p.want("bob", "unlink alice's in a plain directory", bob.Unlink("n/a"), 0)
}

func testStickyCaps(t *testing.T, p *perms) {
	p.dir("s", 0o1777, Carol, Carol.GID)
	p.file("s/a", 0o600, Alice, Alice.GID)
	p.file("s/b", 0o600, Alice, Alice.GID)
	p.want("root0", "unlink alice's", p.as(Root0).Unlink("s/a"), syscall.EPERM)
	p.want("fowner", "unlink alice's", p.as(Fowner).Unlink("s/a"), 0)
	p.want("searcher", "unlink alice's", p.as(Searcher).Unlink("s/b"), syscall.EPERM)
}

func testSetgidDir(t *testing.T, p *perms) {
	p.dir("g", 0o2777, Alice, Staff)
	p.dir("plain", 0o777, Root, 0)
	bob, carol := p.as(Bob), p.as(Carol)
	p.want("bob", "create g/bf 02755", openCreate(bob, "g/bf", 0o2755), 0)
	p.attr("g/bf", 0o2755, Bob.UID, Staff)
	// A stranger to the directory's group loses set-group-ID on an executable
	// file, not on one without group execute.
	p.want("carol", "create g/cf 02755", openCreate(carol, "g/cf", 0o2755), 0)
	p.attr("g/cf", 0o755, Carol.UID, Staff)
	p.want("carol", "create g/cf2 02745", openCreate(carol, "g/cf2", 0o2745), 0)
	p.attr("g/cf2", 0o2745, Carol.UID, Staff)
	p.want("carol", "create g/cf3 04755", openCreate(carol, "g/cf3", 0o4755), 0)
	p.attr("g/cf3", 0o4755, Carol.UID, Staff)
	// New directories inherit the group and set-group-ID.
	p.want("carol", "mkdir g/cd", carol.Mkdir("g/cd", 0o755), 0)
	p.attr("g/cd", 0o2755, Carol.UID, Staff)
	p.want("bob", "mkdir g/bd", bob.Mkdir("g/bd", 0o700), 0)
	p.attr("g/bd", 0o2700, Bob.UID, Staff)
	p.want("carol", "create g/cd/x", openCreate(carol, "g/cd/x", 0o640), 0)
	p.attr("g/cd/x", 0o640, Carol.UID, Staff)
	// Elsewhere the maker's own group; mkdir keeps no set-ID bit it was given.
	p.want("bob", "create plain/x", openCreate(bob, "plain/x", 0o2755), 0)
	p.attr("plain/x", 0o2755, Bob.UID, Bob.GID)
	p.want("bob", "mkdir plain/d 02755", bob.Mkdir("plain/d", 0o2755), 0)
	p.attr("plain/d", 0o755, Bob.UID, Bob.GID)
	p.want("bob", "mkdir plain/sd 01777", bob.Mkdir("plain/sd", 0o1777), 0)
	p.attr("plain/sd", 0o1777, Bob.UID, Bob.GID)
}

func testChmod(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	p.file("d/f", 0o644, Alice, Staff)
	p.file("d/h", 0o644, Alice, 4000)
	p.dir("d/ad", 0o755, Alice, Staff)
	alice, bob, carol := p.as(Alice), p.as(Bob), p.as(Carol)
	p.want("alice", "chmod her file", chmod(alice, "d/f", 0o600), 0)
	p.attr("d/f", 0o600, Alice.UID, Staff)
	p.want("bob", "chmod alice's file", chmod(bob, "d/f", 0o777), syscall.EPERM)
	p.want("carol", "chmod alice's file", chmod(carol, "d/f", 0o777), syscall.EPERM)
	p.want("bob", "chmod alice's directory", chmod(bob, "d/ad", 0o777), syscall.EPERM)
	p.want("alice", "chmod 04755", chmod(alice, "d/f", 0o4755), 0)
	p.attr("d/f", 0o4755, Alice.UID, Staff)
	p.want("alice", "chmod 02755 in her group", chmod(alice, "d/f", 0o2755), 0)
	p.attr("d/f", 0o2755, Alice.UID, Staff)
	// Set-group-ID of a group she is not in is dropped without an error.
	p.want("alice", "chmod 02755 outside her groups", chmod(alice, "d/h", 0o2755), 0)
	p.attr("d/h", 0o755, Alice.UID, 4000)
	p.want("alice", "chmod 01777 a directory", chmod(alice, "d/ad", 0o1777), 0)
	p.attr("d/ad", 0o1777, Alice.UID, Staff)
	p.want("root", "chmod alice's file", chmod(p.root, "d/h", 0o2700), 0)
	p.attr("d/h", 0o2700, Alice.UID, 4000)
}

func testChmodCaps(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	p.file("d/f", 0o644, Alice, Staff)
	p.file("d/r", 0o644, Root, 0)
	p.want("root0", "chmod alice's file", chmod(p.as(Root0), "d/f", 0o600), syscall.EPERM)
	p.want("root0", "chmod root's file", chmod(p.as(Root0), "d/r", 0o600), 0)
	p.want("fowner", "chmod alice's file", chmod(p.as(Fowner), "d/f", 0o2640), 0)
	// CAP_FOWNER is no CAP_FSETID: the group's set-group-ID is dropped.
	p.attr("d/f", 0o640, Alice.UID, Staff)
	p.want("chowner", "chmod alice's file", chmod(p.as(Chowner), "d/f", 0o600), syscall.EPERM)
}

func testChown(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	p.file("d/f", 0o644, Alice, Staff)
	alice, bob := p.as(Alice), p.as(Bob)
	p.want("alice", "give her file to bob", chown(alice, "d/f", Bob.UID, Staff), syscall.EPERM)
	p.want("alice", "chown to herself", chown(alice, "d/f", Alice.UID, Staff), 0)
	p.want("alice", "chgrp to her gid", chgrp(alice, "d/f", Alice.GID), 0)
	p.want("alice", "chgrp to a group she is in", chgrp(alice, "d/f", Staff), 0)
	p.want("alice", "chgrp to a group she is not in", chgrp(alice, "d/f", 4000), syscall.EPERM)
	p.want("bob", "chgrp alice's file", chgrp(bob, "d/f", Staff), syscall.EPERM)
	p.want("root", "chown to bob:4000", chown(p.root, "d/f", Bob.UID, 4000), 0)
	p.attr("d/f", 0o644, Bob.UID, 4000)
	// chown clears set-user-ID always (root too), set-group-ID when the file
	// is group-executable; a directory keeps both.
	p.file("d/s", 0o6755, Alice, Staff)
	p.want("alice", "chgrp a set-ID file", chgrp(alice, "d/s", Staff), 0)
	p.attr("d/s", 0o755, Alice.UID, Staff)
	p.file("d/s2", 0o2745, Alice, Staff)
	p.want("alice", "chgrp a set-group-ID file without group execute", chgrp(alice, "d/s2", Staff), 0)
	p.attr("d/s2", 0o2745, Alice.UID, Staff)
	p.file("d/s3", 0o4755, Alice, Staff)
	p.want("root", "chown a set-user-ID file", chown(p.root, "d/s3", Bob.UID, Staff), 0)
	p.attr("d/s3", 0o755, Bob.UID, Staff)
	p.dir("d/sd", 0o2755, Alice, Staff)
	p.want("root", "chown a set-group-ID directory", chown(p.root, "d/sd", Bob.UID, Staff), 0)
	p.attr("d/sd", 0o2755, Bob.UID, Staff)
}

func testChownCaps(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	p.file("d/f", 0o644, Alice, Staff)
	p.file("d/r", 0o644, Root, 0)
	root0 := p.as(Root0)
	p.want("root0", "chown root's file to alice", chown(root0, "d/r", Alice.UID, 0), syscall.EPERM)
	p.want("root0", "chown root's file to itself", chown(root0, "d/r", 0, 0), 0)
	p.want("chowner", "chown alice's file to carol", chown(p.as(Chowner), "d/f", Carol.UID, Carol.GID), 0)
	p.attr("d/f", 0o644, Carol.UID, Carol.GID)
	p.want("fowner", "chown carol's file", chown(p.as(Fowner), "d/f", Fowner.UID, Fowner.GID), syscall.EPERM)
}

func testUtimes(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	p.file("d/f", 0o664, Alice, Staff)
	alice, bob, carol := p.as(Alice), p.as(Bob), p.as(Carol)
	times := &libservices.SetAttr{Valid: libservices.SetAtime | libservices.SetMtime, Atime: epoch, Mtime: epoch}
	now := &libservices.SetAttr{Valid: libservices.SetAtimeNow | libservices.SetMtimeNow}
	mixed := &libservices.SetAttr{Valid: libservices.SetAtime | libservices.SetMtimeNow, Atime: epoch}
	mtimeNow := &libservices.SetAttr{Valid: libservices.SetMtimeNow}
	// utimensat: both times "now" (or no times) needs ownership, CAP_FOWNER or
	// write permission; anything else (explicit times, or one "now" and the
	// other left alone) ownership or CAP_FOWNER.
	p.want("alice", "explicit times", alice.Setattr("d/f", times), 0)
	p.want("alice", "mtime now only", alice.Setattr("d/f", mtimeNow), 0)
	p.want("bob", "explicit times (writer)", bob.Setattr("d/f", times), syscall.EPERM)
	p.want("carol", "explicit times (not a writer)", carol.Setattr("d/f", times), syscall.EPERM)
	p.want("bob", "now (writer)", bob.Setattr("d/f", now), 0)
	p.want("bob", "mtime now only (writer)", bob.Setattr("d/f", mtimeNow), syscall.EPERM)
	p.want("carol", "now (not a writer)", carol.Setattr("d/f", now), syscall.EACCES)
	p.want("bob", "explicit atime, mtime now (writer)", bob.Setattr("d/f", mixed), syscall.EPERM)
	p.want("root", "explicit times", p.root.Setattr("d/f", times), 0)
	if a := lstat(t, p.root, "d/f"); a.Mtime != epoch {
		t.Fatalf("root's utimes left mtime %+v", a.Mtime)
	}
}

// killPrivOp is one change by a caller to a file of alice's (group Staff).
type killPrivOp struct {
	what string
	fn   func(fs libservices.FS, name string) error
}

var killPrivOps = []killPrivOp{
	{"write", func(fs libservices.FS, name string) error {
		h, err := fs.Open(name, libservices.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = fs.WriteAt(h, []byte("w"), 0)
		if cerr := fs.Close(h); err == nil {
			err = cerr
		}
		return err
	}},
	{"truncate", func(fs libservices.FS, name string) error {
		return fs.Setattr(name, &libservices.SetAttr{Valid: libservices.SetSize, Size: 1})
	}},
	{"ftruncate", func(fs libservices.FS, name string) error {
		h, err := fs.Open(name, libservices.O_RDWR, 0)
		if err != nil {
			return err
		}
		err = fs.Ftruncate(h, 2)
		if cerr := fs.Close(h); err == nil {
			err = cerr
		}
		return err
	}},
	{"open O_TRUNC", func(fs libservices.FS, name string) error {
		return open(fs, name, libservices.O_WRONLY|libservices.O_TRUNC)
	}},
}

func testKillPriv(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	for i, op := range killPrivOps {
		for _, c := range []struct {
			who        string
			c          peercred.Cred
			mode, want uint32
		}{
			{"bob", Bob, 0o6777, 0o777},
			{"bob", Bob, 0o6767, 0o2767}, // no group execute: a member keeps set-group-ID...
			{"bob", Bob, 0o2766, 0o2766},
			{"carol", Carol, 0o2766, 0o766}, // ...a stranger to the group does not
			{"alice", Alice, 0o4777, 0o777}, // the owner too
			{"root", Root, 0o6777, 0o6777},  // CAP_FSETID keeps them
		} {
			name := fmt.Sprintf("d/f%d-%s-%o", i, c.who, c.mode)
			p.file(name, c.mode, Alice, Staff)
			p.want(c.who, op.what+" "+name, op.fn(p.as(c.c), name), 0)
			p.attr(name, c.want, Alice.UID, Staff)
		}
	}
}

// capsV2 is a valid VFS_CAP_REVISION_2 security.capability value (CAP_NET_RAW
// permitted and effective).
var capsV2 = []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

func testXattrPerm(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	p.file("d/f", 0o640, Alice, Staff)
	p.dir("d/sd", 0o1777, Carol, Carol.GID)
	alice, bob, carol := p.as(Alice), p.as(Bob), p.as(Carol)
	buf := make([]byte, 64)
	p.want("alice", "set user.a", alice.Setxattr("d/f", "user.a", []byte("v"), 0), 0)
	p.want("bob", "set user.b (read-only for him)", bob.Setxattr("d/f", "user.b", []byte("v"), 0), syscall.EACCES)
	_, err := bob.Getxattr("d/f", "user.a", buf)
	p.want("bob", "get user.a (group read)", err, 0)
	_, err = carol.Getxattr("d/f", "user.a", buf)
	p.want("carol", "get user.a (no read)", err, syscall.EACCES)
	p.want("bob", "remove user.a", bob.Removexattr("d/f", "user.a"), syscall.EACCES)
	p.want("bob", "set user.x on a sticky directory", bob.Setxattr("d/sd", "user.x", []byte("v"), 0), syscall.EPERM)
	p.want("carol", "set user.x on her sticky directory", carol.Setxattr("d/sd", "user.x", []byte("v"), 0), 0)
	// trusted.* is root's: invisible and unwritable to others.
	p.want("root", "set trusted.t", p.root.Setxattr("d/f", "trusted.t", []byte("v"), 0), 0)
	p.want("alice", "set trusted.x", alice.Setxattr("d/f", "trusted.x", []byte("v"), 0), syscall.EPERM)
	_, err = alice.Getxattr("d/f", "trusted.t", buf)
	p.want("alice", "get trusted.t", err, syscall.ENODATA)
	n, err := p.root.Getxattr("d/f", "trusted.t", buf)
	p.want("root", "get trusted.t", err, 0)
	if string(buf[:n]) != "v" {
		t.Fatalf("root reads trusted.t as %q", buf[:n])
	}
	list, err := alice.Listxattr("d/f")
	p.want("alice", "list", err, 0)
	if slices.Contains(list, "trusted.t") || !slices.Contains(list, "user.a") {
		t.Fatalf("alice lists %q: want user.a and no trusted.t", list)
	}
	list, err = p.root.Listxattr("d/f")
	p.want("root", "list", err, 0)
	if !slices.Contains(list, "trusted.t") {
		t.Fatalf("root lists %q: want trusted.t", list)
	}
	// security.*: file capabilities need CAP_SETFCAP, the others CAP_SYS_ADMIN;
	// reading needs no permission at all.
	p.want("alice", "set security.capability on her file", alice.Setxattr("d/f", "security.capability", capsV2, 0), syscall.EPERM)
	p.want("alice", "set security.polytropon on her file", alice.Setxattr("d/f", "security.polytropon", []byte("v"), 0), syscall.EPERM)
	p.want("root", "set security.capability", p.root.Setxattr("d/f", "security.capability", capsV2, 0), 0)
	_, err = carol.Getxattr("d/f", "security.capability", buf)
	p.want("carol", "get security.capability (no read permission)", err, 0)
	p.want("alice", "remove security.capability", alice.Removexattr("d/f", "security.capability"), syscall.EPERM)
	p.want("root", "remove security.capability", p.root.Removexattr("d/f", "security.capability"), 0)
	_, err = carol.Getxattr("d/f", "security.capability", buf)
	p.want("carol", "get removed security.capability", err, syscall.ENODATA)
	p.want("alice", "remove user.a", alice.Removexattr("d/f", "user.a"), 0)
}

func testNoatime(t *testing.T, p *perms) {
	p.dir("d", 0o777, Root, 0)
	p.file("d/f", 0o644, Alice, Staff)
	p.file("d/g", 0o600, Alice, Staff)
	const noatime = syscall.O_NOATIME | libservices.O_RDONLY
	p.want("alice", "open O_NOATIME her file", open(p.as(Alice), "d/f", noatime), 0)
	p.want("bob", "open O_NOATIME alice's file", open(p.as(Bob), "d/f", noatime), syscall.EPERM)
	p.want("carol", "open O_NOATIME an unreadable file", open(p.as(Carol), "d/g", noatime), syscall.EACCES)
	p.want("root", "open O_NOATIME alice's file", open(p.root, "d/f", noatime), 0)
}

// sysctl reads /proc/sys/fs/NAME: the kernel's behaviour the cases expect.
func sysctl(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/fs/" + name)
	if err != nil {
		t.Fatalf("fs.%s: %v", name, err)
	}
	v, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		t.Fatalf("fs.%s: %v", name, err)
	}
	return v
}

func testHardlinksPerm(t *testing.T, p *perms) {
	protected := p.sysctl("protected_hardlinks") != 0
	refused := syscall.Errno(0)
	if protected {
		refused = syscall.EPERM
	}
	p.dir("l", 0o777, Root, 0)
	p.dir("nw", 0o755, Root, 0)
	p.file("l/f600", 0o600, Alice, Staff)
	p.file("l/f666", 0o666, Alice, Staff)
	p.file("l/s", 0o4777, Alice, Staff)
	bob := p.as(Bob)
	p.want("bob", "link alice's unreadable file", bob.Link("l/f600", "l/x1"), refused)
	p.want("bob", "link alice's 0666 file", bob.Link("l/f666", "l/x2"), 0)
	p.want("bob", "link alice's set-user-ID file", bob.Link("l/s", "l/x3"), refused)
	p.want("bob", "link onto an existing name", bob.Link("l/f666", "l/x2"), syscall.EEXIST)
	p.want("bob", "link into a directory he cannot write", bob.Link("l/f666", "nw/x"), syscall.EACCES)
	p.want("alice", "link her unreadable file", p.as(Alice).Link("l/f600", "l/x4"), 0)
	p.want("root", "link alice's set-user-ID file", p.root.Link("l/s", "l/x5"), 0)
	p.want("bob", "link a directory", bob.Link("l", "l/x6"), syscall.EPERM)
}

func testCreatePerm(t *testing.T, p *perms) {
	p.dir("ro", 0o755, Alice, Staff)
	p.file("ro/e", 0o666, Alice, Staff)
	p.dir("rw", 0o777, Root, 0)
	alice, bob := p.as(Alice), p.as(Bob)
	p.want("bob", "mkdir in alice's 0755", bob.Mkdir("ro/x", 0o755), syscall.EACCES)
	p.want("bob", "create in alice's 0755", openCreate(bob, "ro/x", 0o644), syscall.EACCES)
	p.want("bob", "symlink in alice's 0755", bob.Symlink("e", "ro/x"), syscall.EACCES)
	p.want("bob", "mkdir onto an existing name", bob.Mkdir("ro/e", 0o755), syscall.EEXIST)
	p.want("bob", "O_CREAT|O_EXCL of an existing name", openCreate(bob, "ro/e", 0o644), syscall.EEXIST)
	p.want("bob", "O_CREAT of an existing file", open(bob, "ro/e", libservices.O_CREAT|libservices.O_WRONLY), 0)
	p.want("bob", "unlink in alice's 0755", bob.Unlink("ro/e"), syscall.EACCES)
	p.want("bob", "unlink a missing name", bob.Unlink("ro/missing"), syscall.ENOENT)
	p.want("bob", "rename in alice's 0755", bob.Rename("ro/e", "rw/e"), syscall.EACCES)
	p.want("bob", "rename into alice's 0755", bob.Rename("rw", "ro/rw"), syscall.EACCES)
	p.want("alice", "mkdir in her 0755", alice.Mkdir("ro/x", 0o750), 0)
	p.attr("ro/x", 0o750, Alice.UID, Alice.GID)
	p.want("bob", "create in a 0777", openCreate(bob, "rw/b", 0o640), 0)
	p.attr("rw/b", 0o640, Bob.UID, Bob.GID)
	p.want("bob", "mkdir in a 0777", bob.Mkdir("rw/bd", 0o700), 0)
	p.attr("rw/bd", 0o700, Bob.UID, Bob.GID)
	p.want("bob", "rmdir his own", bob.Rmdir("rw/bd"), 0)
}

func testRenameDir(t *testing.T, p *perms) {
	p.dir("p1", 0o777, Root, 0)
	p.dir("p2", 0o777, Root, 0)
	p.dir("p1/bd", 0o555, Bob, Bob.GID)
	bob := p.as(Bob)
	p.want("bob", "move his read-only directory to another parent", bob.Rename("p1/bd", "p2/bd"), syscall.EACCES)
	p.want("bob", "rename it in place", bob.Rename("p1/bd", "p1/bd2"), 0)
	p.want("bob", "chmod it", chmod(bob, "p1/bd2", 0o755), 0)
	p.want("bob", "move it now", bob.Rename("p1/bd2", "p2/bd"), 0)
	p.want("bob", "move a directory into itself", bob.Rename("p2/bd", "p2/bd/in"), syscall.EINVAL)
}

func testProtectedSymlinks(t *testing.T, p *perms) {
	protected := p.sysctl("protected_symlinks") != 0
	refused := syscall.Errno(0)
	if protected {
		refused = syscall.EACCES
	}
	p.dir("t", 0o1777, Carol, Carol.GID)
	p.dir("n", 0o777, Carol, Carol.GID)
	p.file("target", 0o644, Root, 0)
	// The links are root's (made by root): the contract has no call that gives
	// a link to another user.
	ok(t, "symlink t/ln", p.root.Symlink("/target", "t/ln"))
	ok(t, "symlink n/ln", p.root.Symlink("/target", "n/ln"))
	bob, carol := p.as(Bob), p.as(Carol)
	var a libservices.Attr
	p.want("bob", "stat a link in a sticky world-writable directory", bob.Stat("t/ln", &a), refused)
	p.want("bob", "open it", open(bob, "t/ln", libservices.O_RDONLY), refused)
	p.want("carol", "stat it (owns the directory, not the link)", carol.Stat("t/ln", &a), refused)
	p.want("bob", "lstat it", bob.Lstat("t/ln", &a), 0)
	_, err := bob.Readlink("t/ln")
	p.want("bob", "readlink it", err, 0)
	p.want("root", "stat it (owns the link)", p.root.Stat("t/ln", &a), 0)
	p.want("bob", "stat a link in a plain directory", bob.Stat("n/ln", &a), 0)
}
