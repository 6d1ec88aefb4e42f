package access

import (
	"strings"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/libservices"
)

// The tables below restate fs/namei.c, fs/attr.c, fs/inode.c and fs/xattr.c
// case by case; fstest's permission cases check the same rules against the
// running kernel.

var (
	alice = &Cred{UID: 1, GID: 1, Groups: []uint32{1, 10}}
	bob   = &Cred{UID: 2, GID: 2, Groups: []uint32{2, 10}}
	carol = &Cred{UID: 3, GID: 3}
	root0 = &Cred{UID: 0, GID: 0}
)

func caps(uid uint32, cs ...int) *Cred {
	c := &Cred{UID: uid, GID: uid}
	for _, n := range cs {
		c.Caps |= 1 << n
	}
	return c
}

const (
	dir = syscall.S_IFDIR
	reg = syscall.S_IFREG
	lnk = syscall.S_IFLNK
)

func TestPermissionTable(t *testing.T) {
	for i, c := range []struct {
		cr   *Cred
		p    perm
		mask uint32
		want syscall.Errno
	}{
		// Classes: owner, then group, then other; the first that applies decides.
		{alice, perm{reg | 0o600, 1, 10}, MayRead | MayWrite, 0},
		{alice, perm{reg | 0o060, 1, 10}, MayRead, syscall.EACCES}, // owner class has nothing
		{bob, perm{reg | 0o640, 1, 10}, MayRead, 0},
		{bob, perm{reg | 0o640, 1, 10}, MayWrite, syscall.EACCES},
		{bob, perm{reg | 0o604, 1, 10}, MayRead, syscall.EACCES}, // group class has nothing
		{carol, perm{reg | 0o604, 1, 10}, MayRead, 0},
		{carol, perm{reg | 0o640, 1, 10}, MayRead, syscall.EACCES},
		{&Cred{UID: 5, GID: 10}, perm{reg | 0o040, 1, 10}, MayRead, 0}, // the primary gid counts
		// uid 0 alone is nothing.
		{root0, perm{reg | 0o600, 1, 10}, MayRead, syscall.EACCES},
		{root0, perm{reg | 0o600, 0, 0}, MayRead, 0},
		// CAP_DAC_OVERRIDE: read and write anything, execute when some x bit is set,
		// anything on a directory.
		{caps(5, peercred.CapDacOverride), perm{reg | 0o000, 1, 10}, MayRead | MayWrite, 0},
		{caps(5, peercred.CapDacOverride), perm{reg | 0o600, 1, 10}, MayExec, syscall.EACCES},
		{caps(5, peercred.CapDacOverride), perm{reg | 0o100, 1, 10}, MayExec, 0},
		{caps(5, peercred.CapDacOverride), perm{dir | 0o000, 1, 10}, MayWrite | MayExec, 0},
		// CAP_DAC_READ_SEARCH: read files, read and search directories, nothing else.
		{caps(5, peercred.CapDacReadSearch), perm{reg | 0o000, 1, 10}, MayRead, 0},
		{caps(5, peercred.CapDacReadSearch), perm{reg | 0o000, 1, 10}, MayRead | MayWrite, syscall.EACCES},
		{caps(5, peercred.CapDacReadSearch), perm{dir | 0o000, 1, 10}, MayRead | MayExec, 0},
		{caps(5, peercred.CapDacReadSearch), perm{dir | 0o000, 1, 10}, MayWrite | MayExec, syscall.EACCES},
		{caps(5, peercred.CapFowner), perm{reg | 0o000, 1, 10}, MayRead, syscall.EACCES},
	} {
		if got := permission(c.cr, c.p, c.mask); got != errOrNil(c.want) {
			t.Errorf("%d: permission(uid %d, %#o %d:%d, %d) = %v, want %v", i, c.cr.UID, c.p.mode, c.p.uid, c.p.gid, c.mask, got, c.want)
		}
	}
}

func errOrNil(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func TestSearchable(t *testing.T) {
	chain := []perm{{dir | 0o755, 0, 0}, {dir | 0o710, 1, 10}, {dir | 0o700, 3, 3}}
	if searchable(alice, chain) || searchable(bob, chain) {
		t.Error("a chain with a directory closed to the caller is searchable")
	}
	if !searchable(carol, chain[:1]) || !searchable(bob, chain[:2]) || searchable(carol, chain[:2]) {
		t.Error("group search")
	}
	if !searchable(caps(9, peercred.CapDacReadSearch), chain) || !searchable(caps(9, peercred.CapDacOverride), chain) {
		t.Error("the DAC capabilities search anything")
	}
}

func TestMayDeleteTable(t *testing.T) {
	sticky := perm{dir | 0o1777, 3, 3}
	plain := perm{dir | 0o777, 3, 3}
	for i, c := range []struct {
		cr        *Cred
		dir, vict perm
		isDir     bool
		want      syscall.Errno
	}{
		{bob, sticky, perm{reg | 0o600, 1, 1}, false, syscall.EPERM},
		{alice, sticky, perm{reg | 0o600, 1, 1}, false, 0},
		{carol, sticky, perm{reg | 0o600, 1, 1}, false, 0}, // the directory's owner
		{caps(9, peercred.CapFowner), sticky, perm{reg | 0o600, 1, 1}, false, 0},
		{root0, sticky, perm{reg | 0o600, 1, 1}, false, syscall.EPERM},
		{bob, plain, perm{reg | 0o600, 1, 1}, false, 0},
		{bob, perm{dir | 0o755, 3, 3}, perm{reg | 0o600, 2, 2}, false, syscall.EACCES}, // before the type
		{bob, sticky, perm{dir | 0o700, 1, 1}, true, syscall.EPERM},                    // before the type
		{alice, plain, perm{dir | 0o700, 1, 1}, false, syscall.EISDIR},
		{alice, plain, perm{reg | 0o700, 1, 1}, true, syscall.ENOTDIR},
	} {
		if got := mayDelete(c.cr, c.dir, c.vict, c.isDir); got != errOrNil(c.want) {
			t.Errorf("%d: mayDelete = %v, want %v", i, got, c.want)
		}
	}
}

func TestProtectedTables(t *testing.T) {
	all := Protected{Hardlinks: 1, Symlinks: 1, Regular: 2, FIFOs: 2}
	one := Protected{Hardlinks: 1, Symlinks: 1, Regular: 1, FIFOs: 1}
	off := Protected{}
	link := perm{lnk | 0o777, 1, 1}
	sticky := perm{dir | 0o1777, 3, 3}
	for i, c := range []struct {
		p         Protected
		cr        *Cred
		dir, link perm
		want      syscall.Errno
	}{
		{all, bob, sticky, link, syscall.EACCES},
		{all, alice, sticky, link, 0},                                                             // the link's owner
		{all, bob, perm{dir | 0o1777, 1, 1}, link, 0},                                             // the directory's owner owns the link
		{all, bob, perm{dir | 0o1775, 3, 3}, link, 0},                                             // not world-writable
		{all, bob, perm{dir | 0o777, 3, 3}, link, 0},                                              // not sticky
		{all, caps(0, peercred.CapDacOverride, peercred.CapFowner), sticky, link, syscall.EACCES}, // no capability overrides it
		{off, bob, sticky, link, 0},
	} {
		if got := mayFollowLink(c.p, c.cr, c.dir, c.link); got != errOrNil(c.want) {
			t.Errorf("follow %d: %v, want %v", i, got, c.want)
		}
	}
	for i, c := range []struct {
		p    Protected
		cr   *Cred
		tgt  perm
		want syscall.Errno
	}{
		{one, bob, perm{reg | 0o600, 1, 1}, syscall.EPERM}, // unreadable
		{one, bob, perm{reg | 0o666, 1, 1}, 0},
		{one, bob, perm{reg | 0o4666, 1, 1}, syscall.EPERM},
		{one, bob, perm{reg | 0o2676, 1, 1}, syscall.EPERM},
		{one, bob, perm{reg | 0o2666, 1, 1}, 0}, // set-group-ID without group execute
		{one, bob, perm{syscall.S_IFIFO | 0o666, 1, 1}, syscall.EPERM},
		{one, alice, perm{reg | 0o000, 1, 1}, 0},
		{one, caps(9, peercred.CapFowner), perm{reg | 0o000, 1, 1}, 0},
		{off, bob, perm{reg | 0o000, 1, 1}, 0},
	} {
		if got := mayLink(c.p, c.cr, c.tgt); got != errOrNil(c.want) {
			t.Errorf("link %d: %v, want %v", i, got, c.want)
		}
	}
	for i, c := range []struct {
		p      Protected
		cr     *Cred
		dir, f perm
		want   syscall.Errno
	}{
		{one, bob, sticky, perm{reg | 0o666, 1, 1}, syscall.EACCES},
		{one, alice, sticky, perm{reg | 0o666, 1, 1}, 0},
		{one, bob, sticky, perm{reg | 0o666, 3, 3}, 0}, // the directory's owner's
		{one, bob, perm{dir | 0o1770, 3, 3}, perm{reg | 0o666, 1, 1}, 0},
		{all, bob, perm{dir | 0o1770, 3, 3}, perm{reg | 0o666, 1, 1}, syscall.EACCES},
		{all, bob, perm{dir | 0o1770, 3, 3}, perm{syscall.S_IFIFO | 0o666, 1, 1}, syscall.EACCES},
		{one, bob, perm{dir | 0o1770, 3, 3}, perm{syscall.S_IFIFO | 0o666, 1, 1}, 0},
		{Protected{Regular: 0, FIFOs: 1}, bob, sticky, perm{reg | 0o666, 1, 1}, 0},
		{Protected{Regular: 0, FIFOs: 1}, bob, sticky, perm{syscall.S_IFIFO | 0o666, 1, 1}, syscall.EACCES},
		{all, bob, perm{dir | 0o777, 3, 3}, perm{reg | 0o666, 1, 1}, 0},
	} {
		if got := mayCreateInSticky(c.p, c.cr, c.dir, c.f); got != errOrNil(c.want) {
			t.Errorf("sticky create %d: %v, want %v", i, got, c.want)
		}
	}
}

func TestNewFileTable(t *testing.T) {
	sgid := perm{dir | 0o2777, 1, 10}
	for i, c := range []struct {
		cr            *Cred
		dir           perm
		mode          uint32
		uid, gid, out uint32
	}{
		{bob, sgid, reg | 0o2755, 2, 10, reg | 0o2755},
		{carol, sgid, reg | 0o2755, 3, 10, reg | 0o755}, // not in group 10
		{carol, sgid, reg | 0o2745, 3, 10, reg | 0o2745},
		{caps(3, peercred.CapFsetid), sgid, reg | 0o2755, 3, 10, reg | 0o2755},
		{carol, sgid, dir | 0o755, 3, 10, dir | 0o2755},
		{carol, perm{dir | 0o777, 1, 10}, reg | 0o2755, 3, 3, reg | 0o2755},
		{carol, perm{dir | 0o777, 1, 10}, dir | 0o755, 3, 3, dir | 0o755},
	} {
		uid, gid, m := newOwner(c.cr, c.dir, stripSGID(c.cr, c.dir, c.mode))
		if uid != c.uid || gid != c.gid || m != c.out {
			t.Errorf("%d: %d:%d %#o, want %d:%d %#o", i, uid, gid, m, c.uid, c.gid, c.out)
		}
	}
}

func TestMayOpenTable(t *testing.T) {
	f := perm{reg | 0o644, 1, 10}
	for i, c := range []struct {
		cr    *Cred
		p     perm
		flags int
		want  syscall.Errno
	}{
		{bob, f, libservices.O_RDONLY, 0},
		{bob, f, libservices.O_WRONLY, syscall.EACCES},
		{bob, f, libservices.O_RDONLY | libservices.O_TRUNC, syscall.EACCES},
		{bob, f, libservices.O_RDONLY | syscall.O_NOATIME, syscall.EPERM},
		{alice, f, libservices.O_RDWR | syscall.O_NOATIME, 0},
		{caps(9, peercred.CapFowner), f, libservices.O_RDONLY | syscall.O_NOATIME, 0},
		{carol, perm{reg | 0o600, 1, 1}, libservices.O_RDONLY | syscall.O_NOATIME, syscall.EACCES},
		{alice, perm{dir | 0o755, 1, 1}, libservices.O_WRONLY, syscall.EISDIR},
		{bob, perm{dir | 0o700, 1, 1}, libservices.O_WRONLY, syscall.EISDIR}, // before permission
		{alice, perm{lnk | 0o777, 1, 1}, libservices.O_RDONLY, syscall.ELOOP},
		{bob, perm{syscall.S_IFIFO | 0o644, 1, 1}, libservices.O_RDONLY | libservices.O_TRUNC, 0},
	} {
		if got := mayOpen(c.cr, c.p, c.flags); got != errOrNil(c.want) {
			t.Errorf("%d: mayOpen(%#o) = %v, want %v", i, c.flags, got, c.want)
		}
	}
}

func TestSetattrTable(t *testing.T) {
	f := perm{reg | 0o664, 1, 10}
	suid := perm{reg | 0o6775, 1, 10}
	sa := func(valid uint32, mode, uid, gid uint32) *libservices.SetAttr {
		return &libservices.SetAttr{Valid: valid, Mode: mode, Uid: uid, Gid: gid, Size: 1}
	}
	for i, c := range []struct {
		cr       *Cred
		p        perm
		sa       *libservices.SetAttr
		kill     bool
		want     syscall.Errno
		wantMode int64 // -1: no mode change
	}{
		{alice, f, sa(libservices.SetMode, 0o600, 0, 0), false, 0, 0o600},
		{bob, f, sa(libservices.SetMode, 0o600, 0, 0), false, syscall.EPERM, -1},
		{alice, perm{reg | 0o644, 1, 20}, sa(libservices.SetMode, 0o2755, 0, 0), false, 0, 0o755},
		{alice, perm{reg | 0o644, 1, 20}, sa(libservices.SetMode|libservices.SetGid, 0o2755, 0, 10), false, 0, 0o2755},
		{caps(9, peercred.CapFowner), f, sa(libservices.SetMode, 0o2755, 0, 0), false, 0, 0o755},
		{alice, f, sa(libservices.SetUid, 0, 2, 0), false, syscall.EPERM, -1},
		{alice, f, sa(libservices.SetUid, 0, 1, 0), false, 0, -1},
		{alice, f, sa(libservices.SetGid, 0, 0, 1), false, 0, -1},
		{alice, f, sa(libservices.SetGid, 0, 0, 30), false, syscall.EPERM, -1},
		{bob, f, sa(libservices.SetGid, 0, 0, 10), false, syscall.EPERM, -1},
		{caps(9, peercred.CapChown), f, sa(libservices.SetUid|libservices.SetGid, 0, 7, 7), false, 0, -1},
		{root0, perm{reg | 0o644, 0, 0}, sa(libservices.SetUid, 0, 1, 0), false, syscall.EPERM, -1},
		// chown clears set-user-ID always, set-group-ID with group execute.
		{alice, suid, sa(libservices.SetGid, 0, 0, 10), false, 0, 0o775},
		{caps(0, peercred.CapChown, peercred.CapFsetid), suid, sa(libservices.SetUid, 0, 5, 0), false, 0, 0o775},
		{alice, perm{reg | 0o2745, 1, 10}, sa(libservices.SetGid, 0, 0, 10), false, 0, -1},
		{alice, perm{dir | 0o6755, 1, 10}, sa(libservices.SetGid, 0, 0, 10), false, 0, -1},
		// truncate: write permission, regular files, set-ID bits for those without CAP_FSETID.
		{bob, suid, sa(libservices.SetSize, 0, 0, 0), false, 0, 0o775},
		{carol, perm{reg | 0o6777, 1, 10}, sa(libservices.SetSize, 0, 0, 0), false, 0, 0o777},
		{carol, f, sa(libservices.SetSize, 0, 0, 0), false, syscall.EACCES, -1},
		{alice, perm{dir | 0o777, 1, 1}, sa(libservices.SetSize, 0, 0, 0), false, syscall.EISDIR, -1},
		{caps(9, peercred.CapFsetid, peercred.CapDacOverride), suid, sa(libservices.SetSize, 0, 0, 0), false, 0, -1},
		// times
		{bob, f, sa(libservices.SetAtimeNow|libservices.SetMtimeNow, 0, 0, 0), false, 0, -1},
		{carol, f, sa(libservices.SetAtimeNow|libservices.SetMtimeNow, 0, 0, 0), false, syscall.EACCES, -1},
		{bob, f, sa(libservices.SetMtimeNow, 0, 0, 0), false, syscall.EPERM, -1},
		{bob, f, sa(libservices.SetAtime|libservices.SetMtime, 0, 0, 0), false, syscall.EPERM, -1},
		{carol, f, sa(libservices.SetAtime, 0, 0, 0), false, syscall.EPERM, -1},
		{caps(9, peercred.CapFowner), f, sa(libservices.SetAtime, 0, 0, 0), false, 0, -1},
		// A FUSE kernel's clearing of set-ID bits, from anyone; nothing else.
		{carol, perm{reg | 0o6777, 1, 10}, sa(libservices.SetMode|libservices.SetSize, 0o777, 0, 0), true, 0, 0o777},
		{carol, suid, sa(libservices.SetMode, 0o4775, 0, 0), true, 0, 0o4775},
		{carol, suid, sa(libservices.SetMode, 0o6777, 0, 0), true, syscall.EPERM, -1},
		{carol, suid, sa(libservices.SetMode, 0o775, 0, 0), false, syscall.EPERM, -1},
	} {
		out, err := setattrRules(c.cr, c.p, c.sa, c.kill)
		if err != errOrNil(c.want) {
			t.Errorf("%d: %v, want %v", i, err, c.want)
			continue
		}
		if err != nil {
			continue
		}
		gotMode := int64(-1)
		if out.Valid&libservices.SetMode != 0 {
			gotMode = int64(out.Mode)
		}
		if gotMode != c.wantMode {
			t.Errorf("%d: mode %#o, want %#o", i, gotMode, c.wantMode)
		}
	}
}

func TestKillPrivTable(t *testing.T) {
	for i, c := range []struct {
		cr   *Cred
		p    perm
		want uint32
	}{
		{bob, perm{reg | 0o6777, 1, 10}, setID},
		{bob, perm{reg | 0o2767, 1, 10}, 0},                 // member, no group execute
		{carol, perm{reg | 0o2767, 1, 10}, syscall.S_ISGID}, // stranger
		{alice, perm{reg | 0o4777, 1, 10}, syscall.S_ISUID},
		{caps(0, peercred.CapFsetid), perm{reg | 0o6777, 1, 10}, 0},
		{bob, perm{dir | 0o6777, 1, 10}, 0},
	} {
		if got := killPriv(c.cr, c.p); got != c.want {
			t.Errorf("%d: %#o, want %#o", i, got, c.want)
		}
	}
}

func TestXattrTables(t *testing.T) {
	f := perm{reg | 0o640, 1, 10}
	sd := perm{dir | 0o1777, 3, 3}
	for i, c := range []struct {
		cr    *Cred
		p     perm
		name  string
		write bool
		want  syscall.Errno
	}{
		{alice, f, "user.a", true, 0},
		{bob, f, "user.a", true, syscall.EACCES},
		{bob, f, "user.a", false, 0},
		{carol, f, "user.a", false, syscall.EACCES},
		{carol, f, "security.capability", false, 0},
		{carol, f, "system.posix_acl_access", false, 0},
		{alice, f, "trusted.t", true, syscall.EPERM},
		{alice, f, "trusted.t", false, syscall.ENODATA},
		{caps(9, peercred.CapSysAdmin), f, "trusted.t", true, 0},
		{bob, sd, "user.x", true, syscall.EPERM},
		{carol, sd, "user.x", true, 0},
		{alice, perm{syscall.S_IFIFO | 0o666, 1, 1}, "user.x", true, syscall.EPERM},
		{alice, perm{syscall.S_IFIFO | 0o666, 1, 1}, "user.x", false, syscall.ENODATA},
		{carol, f, "other.x", true, syscall.EACCES},
	} {
		if got := xattrPermission(c.cr, c.p, c.name, c.write); got != errOrNil(c.want) {
			t.Errorf("%d: %s: %v, want %v", i, c.name, got, c.want)
		}
	}
	capsV2 := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for i, c := range []struct {
		cr     *Cred
		name   string
		value  []byte
		remove bool
		want   syscall.Errno
	}{
		{alice, "security.capability", capsV2, false, syscall.EPERM},
		{alice, "security.capability", []byte("junk"), false, syscall.EINVAL},
		{caps(0, peercred.CapSetfcap), "security.capability", capsV2, false, 0},
		{caps(0, peercred.CapSysAdmin), "security.capability", capsV2, false, syscall.EPERM},
		{caps(0, peercred.CapSetfcap), "security.capability", nil, true, 0},
		{alice, "security.capability", nil, true, syscall.EPERM},
		{alice, "security.selinux", []byte("x"), false, syscall.EPERM},
		{caps(0, peercred.CapSysAdmin), "security.selinux", []byte("x"), false, 0},
		{caps(0, peercred.CapSysAdmin, peercred.CapFowner), "system.posix_acl_access", []byte("x"), false, syscall.EOPNOTSUPP},
		{alice, "user.x", []byte("x"), false, 0},
	} {
		if got := xattrSecurityRules(c.cr, c.name, c.value, c.remove); got != errOrNil(c.want) {
			t.Errorf("security %d: %s: %v, want %v", i, c.name, got, c.want)
		}
	}
}

// TestCanonicalDir: the View's fast path takes exactly the names Clean keeps
// unchanged (the root aside), and splits them as Split does.
func TestCanonicalDir(t *testing.T) {
	for _, name := range []string{
		"f", "d/f", "a/b/c", ".", "./f", "/f", "f/", "d//f", "d/./f", "d/../f", "..", "...", "d/...", ".x",
		"a\x00b", "", strings.Repeat("n", libservices.NameMax), strings.Repeat("n", libservices.NameMax+1),
		strings.Repeat("d/", libservices.PathMax/2) + "f",
	} {
		dir, ok := canonicalDir(name)
		clean, err := libservices.Clean(name)
		want := err == nil && clean == name && !libservices.IsRoot(clean)
		if ok != want {
			t.Errorf("%.40q: canonical %v, Clean says %q %v", name, ok, clean, err)
			continue
		}
		if ok {
			if d, _ := libservices.Split(name); d != dir {
				t.Errorf("%q: dir %q, Split %q", name, dir, d)
			}
		}
	}
}
