package service

import (
	"testing"

	"go.uber.org/zap"

	"github.com/polytropon/polytropon/ipc/back"
	"github.com/polytropon/polytropon/ipc/wire"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/stack"
)

// TestHandlerStatAllocs pins the package doc's claim: the handler's stat of a
// cached file costs one allocation, the path copied out of shared memory, with
// the permission checks, for an unprivileged caller and for root.
func TestHandlerStatAllocs(t *testing.T) {
	fs, err := stack.BuildYAML([]byte("stack:\n  - cache: {size: 1MiB}\n  - memfs: {}\n"), "filesystems[0]", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Close(fs)
	for _, p := range []string{"d", "d/e"} {
		if err := fs.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h, err := fs.Open("d/e/f", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fs.Close(h)
	in := &instance{name: "m", prefix: "/m", fs: fs}
	mt, err := newMountTable([]*instance{in})
	if err != nil {
		t.Fatal(err)
	}
	hd := &handler{mounts: mt, log: zap.NewNop(), m: newMetrics([]*instance{in}), status: func() []byte { return nil }}
	a := new(libservices.Attr)
	fsAllocs := testing.AllocsPerRun(100, func() { fs.Stat("d/e/f", a) })
	for _, cred := range []back.Credential{
		{UID: 2002, GID: 2002, Groups: []uint32{2002}},
		{UID: 0, GID: 0, Caps: ^uint64(0) >> 23},
	} {
		c := &back.ClientCtx{UID: cred.UID, GID: cred.GID, Cred: cred}
		hd.ClientOpened(c)
		data := make([]byte, 4096)
		const path = "/m/d/e/f"
		for _, op := range []wire.Op{wire.OpStat, wire.OpLstat} {
			run := func() {
				copy(data, path)
				d := wire.Desc{Op: op, Aux: uint32(len(path)), Length: uint32(len(path))}
				if st := hd.Handle(c, &d, data); st != 0 {
					t.Fatalf("uid %d op %d: status %d", cred.UID, op, st)
				}
			}
			run()
			if n := testing.AllocsPerRun(200, run); n > fsAllocs+1 {
				t.Errorf("uid %d op %d: %.1f allocations, want the stack's %.1f and the path", cred.UID, op, n, fsAllocs)
			}
		}
		hd.ClientGone(c)
	}
}
