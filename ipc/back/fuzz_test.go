package back

import (
	"bytes"
	"sync/atomic"
	"testing"

	"github.com/polytropon/polytropon/ipc/wire"
)

// FuzzDispatch writes arbitrary descriptors (and buffer contents) into a real client's
// arena and has the service serve them: it must never panic, always answer with a
// status, and never write outside the descriptor and its own client's data area —
// the header, the other descriptors and a second client's whole arena stay as they
// were.
func FuzzDispatch(f *testing.F) {
	s, _ := startService(f, Config{SlotBytes: 8192, DescsPerClient: 4})
	c, other := dial(f, s), dial(f, s)
	if err := c.Nop(); err != nil {
		f.Fatal(err)
	}
	if _, err := other.Create("/other", 0o600); err != nil {
		f.Fatal(err)
	}
	h, err := c.Create("/mine", 0o600)
	if err != nil {
		f.Fatal(err)
	}
	var cc, oc *ClientCtx
	for i := range s.clients {
		if x := s.clients[i].Load(); x != nil && cc == nil {
			cc = x
		} else if x != nil {
			oc = x
		}
	}
	lo, _ := c.DataArea()
	seed := func(d wire.Desc, buf string) {
		b := make([]byte, wire.DescSize)
		d.EncodeRequest(b)
		f.Add(append(b, buf...))
	}
	v := uint16(wire.Version)
	seed(wire.Desc{Version: v, Op: wire.OpNop}, "")
	seed(wire.Desc{Version: v, Op: wire.OpStat, BufOff: lo, Length: 64, Aux: 6}, "/mine")
	seed(wire.Desc{Version: v, Op: wire.OpWrite, Handle: h, BufOff: lo, Length: 100, Offset: 3}, "data")
	seed(wire.Desc{Version: v, Op: wire.OpRead, Handle: h, BufOff: lo, Length: 100}, "")
	seed(wire.Desc{Version: v, Op: wire.OpRename, BufOff: lo, Length: 8, Aux: 4}, "/a/b/c/d")
	seed(wire.Desc{Version: v, Op: wire.OpReaddir, Handle: h, BufOff: lo, Length: 4096}, "")
	seed(wire.Desc{Version: v, Op: wire.OpOpen, Flags: 0o102, BufOff: lo, Length: 64, Aux: 6}, "/new")
	const idx = 2
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < wire.DescSize {
			in = append(in, make([]byte, wire.DescSize-len(in))...)
		}
		off := int(cc.descOff) + idx*wire.DescSize
		copy(cc.mem[off:off+wire.OffState], in[:wire.OffState])
		copy(cc.mem[off+wire.OffMode:off+wire.DescSize], in[wire.OffMode:wire.DescSize])
		copy(cc.mem[lo:lo+4096], in[wire.DescSize:])
		before := bytes.Clone(cc.mem[:cc.descOff+cc.numDesc*wire.DescSize])
		otherBefore := bytes.Clone(oc.mem)
		atomic.StoreUint32(cc.states[idx], wire.StateSubmitted)
		s.serve(cc, idx, new(wire.Desc))
		if got := atomic.LoadUint32(cc.states[idx]); got != wire.StateDone {
			t.Fatalf("descriptor left in state %d", got)
		}
		after := cc.mem[:cc.descOff+cc.numDesc*wire.DescSize]
		// Only the target descriptor's reply fields may change.
		copy(before[off+wire.OffStatus:], after[off+wire.OffStatus:off+wire.OffState+wire.SizeState])
		if !bytes.Equal(before, after) {
			t.Fatal("the service wrote into the arena header or another descriptor")
		}
		if !bytes.Equal(otherBefore, oc.mem) {
			t.Fatal("the service wrote into another client's arena")
		}
		atomic.StoreUint32(cc.states[idx], wire.StateFree)
	})
}
