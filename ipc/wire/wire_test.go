package wire

import (
	"errors"
	"syscall"
	"testing"
)

var lim = Limits{DataLo: 4096, DataHi: 65536}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := Desc{Version: Version, Op: OpWrite, Flags: 3, ReqID: 1 << 40, Handle: 7, Offset: 1 << 33,
		BufOff: 8192, Length: 512, Aux: 9, Mode: 0o644}
	b := make([]byte, DescSize)
	for i := range b {
		b[i] = 0xee
	}
	in.EncodeRequest(b)
	PutReply(b, -5, 42)
	var out Desc
	out.Decode(b)
	want := in
	want.Status, want.Result, want.State = -5, 42, 0xeeeeeeee
	if out != want {
		t.Fatalf("decoded %+v, want %+v", out, want)
	}
	if s, r := Reply(b); s != -5 || r != 42 {
		t.Fatalf("Reply = %d %d", s, r)
	}
	// Little-endian on the wire, whatever the host.
	if b[OffOp] != byte(OpWrite) || b[OffOp+1] != 0 || b[OffHandle] != 7 {
		t.Fatalf("not little-endian: % x", b)
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	s := Stat{Ino: 1, Size: 2, Blocks: 8, Mode: 0o100644, Nlink: 1, UID: 5, GID: 6, Blksize: 4096,
		Rdev: 7, AtimeSec: -3, MtimeSec: 1 << 40, CtimeSec: 9, AtimeNsec: 1, MtimeNsec: 999999999, CtimeNsec: 3}
	b := make([]byte, StatSize)
	s.Put(b)
	var g Stat
	g.Get(b)
	if g != s {
		t.Fatalf("%+v != %+v", g, s)
	}
	fs := Statfs{Type: 0xef53, Bsize: 4096, Blocks: 1, Bfree: 2, Bavail: 3, Files: 4, Free: 5, Namelen: 255, Frsize: 4096}
	fb := make([]byte, StatfsSize)
	fs.Put(fb)
	var fg Statfs
	fg.Get(fb)
	if fg != fs {
		t.Fatalf("%+v != %+v", fg, fs)
	}
	sa := Setattr{UID: 1, GID: 2, AtimeSec: -1, MtimeSec: 5, AtimeNsec: 6, MtimeNsec: 7}
	sb := make([]byte, SetattrSize)
	sa.Put(sb)
	var sg Setattr
	sg.Get(sb)
	if sg != sa {
		t.Fatalf("%+v != %+v", sg, sa)
	}
}

func TestDirentAndMount(t *testing.T) {
	buf := make([]byte, 48)
	n1 := PutDirent(buf, "alpha", 8, 1<<40)
	n2 := PutDirent(buf[n1:], "b", 4, 2)
	if n1 != 17 || n2 != 13 {
		t.Fatalf("sizes %d %d", n1, n2)
	}
	if PutDirent(buf[n1+n2:], "this-name-is-too-long-to-fit", 8, 3) != 0 {
		t.Fatal("entry that does not fit was written")
	}
	name, typ, ino, n, err := NextDirent(buf[:n1])
	if err != nil || string(name) != "alpha" || typ != 8 || ino != 1<<40 || n != 17 {
		t.Fatalf("%q %d %d %d %v", name, typ, ino, n, err)
	}
	name, typ, ino, n, err = NextDirent(buf[n1 : n1+n2])
	if err != nil || string(name) != "b" || typ != 4 || ino != 2 || n != 13 {
		t.Fatalf("%q %d %d %d %v", name, typ, ino, n, err)
	}
	if _, _, _, _, err := NextDirent(buf[:14]); !errors.Is(err, ErrBadDirent) {
		t.Fatal("truncated entry accepted")
	}
	m := make([]byte, 16)
	k := PutMount(m, "data", "/d")
	if k != 10 || PutMount(m[k:], "toolong", "/x") != 0 {
		t.Fatalf("mount record sizes %d", k)
	}
	nm, pf, k2, err := NextMount(m[:k])
	if err != nil || string(nm) != "data" || string(pf) != "/d" || k2 != k {
		t.Fatalf("%q %q %d %v", nm, pf, k2, err)
	}
	if _, _, _, err := NextMount(m[:k-1]); !errors.Is(err, ErrBadMount) {
		t.Fatal("truncated mount record accepted")
	}
}

func ok(op Op) Desc {
	d := Desc{Version: Version, Op: op}
	switch opRules[op].kind {
	case kindPath:
		d.BufOff, d.Length, d.Aux = 4096, 128, 5
	case kindRename:
		d.BufOff, d.Length, d.Aux = 4096, 10, 5
	case kindIO:
		d.Handle, d.BufOff, d.Length = 1, 4096, 4096
	case kindHandle, kindResize:
		d.Handle = 1
	case kindRecord, kindDir, kindFalloc:
		d.Handle, d.BufOff, d.Length = 1, 4096, 4096
	case kindSetattr:
		d.BufOff, d.Length, d.Aux = 4096, SetattrSize+5, 5
	case kindXattr:
		d.BufOff, d.Length, d.Aux, d.Offset = 4096, 64, 5, 8
	case kindBuf:
		d.BufOff, d.Length = 4096, 4096
	}
	return d
}

func TestValidateAcceptsEveryWellFormedOp(t *testing.T) {
	for op := OpNop; op < opCount; op++ {
		d := ok(op)
		if err := Validate(&d, lim); err != nil {
			t.Errorf("%v: %v", op, err)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	cases := []struct {
		name  string
		op    Op
		mut   func(*Desc)
		field string
		errno syscall.Errno
	}{
		{"version", OpNop, func(d *Desc) { d.Version = Version + 1 }, "version", syscall.EINVAL},
		{"old version", OpNop, func(d *Desc) { d.Version = 1 }, "version", syscall.EINVAL},
		{"zero op", OpNop, func(d *Desc) { d.Op = 0 }, "op", syscall.EINVAL},
		{"op beyond table", OpNop, func(d *Desc) { d.Op = 999 }, "op", syscall.EINVAL},
		{"flags on read", OpRead, func(d *Desc) { d.Flags = 1 }, "flags", syscall.EINVAL},
		{"unknown open flag", OpOpen, func(d *Desc) { d.Flags = syscall.O_SYNC }, "flags", syscall.EINVAL},
		{"mode on unlink", OpUnlink, func(d *Desc) { d.Mode = 0o644 }, "mode", syscall.EINVAL},
		{"setuid-beyond mode", OpMkdir, func(d *Desc) { d.Mode = 0o170000 }, "mode", syscall.EINVAL},
		{"handle on stat", OpStat, func(d *Desc) { d.Handle = 3 }, "handle", syscall.EINVAL},
		{"offset on mkdir", OpMkdir, func(d *Desc) { d.Offset = 1 }, "offset", syscall.EINVAL},
		{"offset beyond 2^63", OpRead, func(d *Desc) { d.Offset = 1 << 63 }, "offset", syscall.EINVAL},
		{"range end beyond 2^63", OpWrite, func(d *Desc) { d.Offset = 1<<63 - 2 }, "offset", syscall.EINVAL},
		{"length on fsync", OpFsync, func(d *Desc) { d.Length = 1 }, "length", syscall.EINVAL},
		{"buffer on nop", OpNop, func(d *Desc) { d.BufOff = 4096 }, "length", syscall.EINVAL},
		{"huge read", OpRead, func(d *Desc) { d.Length = MaxIO + 1 }, "length", syscall.EINVAL},
		{"buffer before data area", OpRead, func(d *Desc) { d.BufOff = 0 }, "bufoff", syscall.EINVAL},
		{"buffer past the end", OpWrite, func(d *Desc) { d.BufOff = 65536 - 100 }, "bufoff", syscall.EINVAL},
		{"wrapping buffer", OpWrite, func(d *Desc) { d.BufOff, d.Length = 0xffffffff, 2 }, "bufoff", syscall.EINVAL},
		{"empty path", OpStat, func(d *Desc) { d.Aux = 0 }, "aux", syscall.EINVAL},
		{"path longer than buffer", OpUnlink, func(d *Desc) { d.Aux = 129 }, "aux", syscall.EINVAL},
		{"path too long", OpUnlink, func(d *Desc) { d.Aux, d.Length = PathMax+1, PathMax+1 }, "aux", syscall.ENAMETOOLONG},
		{"rename without new path", OpRename, func(d *Desc) { d.Aux = 10 }, "aux", syscall.EINVAL},
		{"aux on read", OpRead, func(d *Desc) { d.Aux = 1 }, "aux", syscall.EINVAL},
		{"stat buffer too small", OpStat, func(d *Desc) { d.Length = StatSize - 1; d.Aux = 3 }, "length", syscall.EINVAL},
		{"fstat buffer too small", OpFstat, func(d *Desc) { d.Length = 8 }, "length", syscall.EINVAL},
		{"statfs buffer too small", OpStatfs, func(d *Desc) { d.Length = StatfsSize - 1 }, "length", syscall.EINVAL},
		{"unknown fsync flag", OpFsync, func(d *Desc) { d.Flags = 2 }, "flags", syscall.EINVAL},
		{"setattr path over the record", OpSetattr, func(d *Desc) { d.Aux = 6 }, "aux", syscall.EINVAL},
		{"setattr unknown valid bit", OpSetattr, func(d *Desc) { d.Flags = 0x100 }, "flags", syscall.EINVAL},
		{"xattr without name", OpGetxattr, func(d *Desc) { d.Offset = 0 }, "offset", syscall.EINVAL},
		{"xattr name too long", OpSetxattr, func(d *Desc) { d.Offset = NameMax + 1 }, "offset", syscall.EINVAL},
		{"xattr name past buffer", OpRemovexattr, func(d *Desc) { d.Offset = 60 }, "aux", syscall.EINVAL},
		{"setxattr unknown flag", OpSetxattr, func(d *Desc) { d.Flags = 4 }, "flags", syscall.EINVAL},
		{"fallocate without length record", OpFallocate, func(d *Desc) { d.Length = 7 }, "length", syscall.EINVAL},
		{"fallocate unknown mode", OpFallocate, func(d *Desc) { d.Flags = 8 }, "flags", syscall.EINVAL},
		{"handle on lock", OpLock, func(d *Desc) { d.Handle = 1 }, "handle", syscall.EINVAL},
		{"path on mounts", OpMounts, func(d *Desc) { d.Aux = 1 }, "aux", syscall.EINVAL},
		{"offset on status", OpStatus, func(d *Desc) { d.Offset = 1 }, "offset", syscall.EINVAL},
	}
	for _, c := range cases {
		d := ok(c.op)
		c.mut(&d)
		err := Validate(&d, lim)
		if err == nil {
			t.Errorf("%s: accepted %+v", c.name, d)
			continue
		}
		if err.Field != c.field || err.Errno != c.errno {
			t.Errorf("%s: got %v (%v), want field %s errno %v", c.name, err, err.Errno, c.field, c.errno)
		}
	}
}

func TestValidateAllocatesNothing(t *testing.T) {
	d := ok(OpRead)
	bad := d
	bad.BufOff = 0
	if n := testing.AllocsPerRun(100, func() { _ = Validate(&d, lim); _ = Validate(&bad, lim) }); n != 0 {
		t.Fatalf("%v allocs per Validate", n)
	}
}

// FuzzValidate feeds arbitrary descriptor bytes to Decode and Validate: it must never
// panic, and whatever it accepts must have its buffer inside the data area.
func FuzzValidate(f *testing.F) {
	for op := OpNop; op < opCount; op++ {
		d := ok(op)
		b := make([]byte, DescSize)
		d.EncodeRequest(b)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < DescSize {
			b = append(b, make([]byte, DescSize-len(b))...)
		}
		var d Desc
		d.Decode(b)
		if err := Validate(&d, lim); err != nil {
			if err.Errno == 0 {
				t.Fatalf("error without errno: %v", err)
			}
			return
		}
		if d.Length > 0 || d.BufOff != 0 {
			if d.BufOff < lim.DataLo || uint64(d.BufOff)+uint64(d.Length) > uint64(lim.DataHi) {
				t.Fatalf("accepted a buffer outside the data area: %+v", d)
			}
		}
		if d.Op == OpInvalid || d.Op >= opCount {
			t.Fatalf("accepted op %d", d.Op)
		}
	})
}

func TestHandshakeRoundTrip(t *testing.T) {
	w := Welcome{Version: Version, Status: -5, Slot: 7, Gen: 9, RingCap: 64, NumDesc: 33, SlotBytes: 8192,
		StatusSize: StatusPageSize, ArenaSize: 1<<33 + 5}
	b := make([]byte, WelcomeSize)
	w.Put(b)
	var got Welcome
	if err := got.Get(b); err != nil || got != w {
		t.Fatalf("welcome round trip: %+v, %v; want %+v", got, err, w)
	}
	if err := got.Get(b[:WelcomeSize-1]); err != ErrHandshake {
		t.Fatalf("short welcome: %v", err)
	}
	b[WelcomeOffMagic] ^= 1
	if err := got.Get(b); err != ErrHandshake {
		t.Fatalf("welcome with a bad magic: %v", err)
	}
	h := Hello{Version: Version}
	hb := make([]byte, HelloSize)
	h.Put(hb)
	var gh Hello
	if err := gh.Get(hb); err != nil || gh != h {
		t.Fatalf("hello round trip: %+v, %v", gh, err)
	}
	if err := gh.Get(append(hb, 0)); err != ErrHandshake {
		t.Fatalf("long hello: %v", err)
	}
}

func TestRingEntry(t *testing.T) {
	for _, p := range []uint64{0, 1, 1<<32 - 2, 1<<32 - 1, 1 << 32, 1<<40 + 3} {
		e := RingEntry(RingSeq(p), 17)
		seq, idx := SplitRingEntry(e)
		if seq != uint32(p+1) || idx != 17 {
			t.Fatalf("position %d: entry %#x splits into seq %d idx %d", p, e, seq, idx)
		}
	}
	// A zeroed ring holds no entry for position 0.
	if seq, _ := SplitRingEntry(0); seq == RingSeq(0) {
		t.Fatal("a zero entry is valid for position 0")
	}
}
