package uring

import "fmt"

// Op is an io_uring opcode (enum io_uring_op).
type Op uint8

// Opcodes this package prepares, and the rest by number for Probe.
const (
	OpNop        Op = 0
	OpReadv      Op = 1
	OpWritev     Op = 2
	OpFsync      Op = 3
	OpReadFixed  Op = 4
	OpWriteFixed Op = 5
	OpAccept     Op = 13
	OpConnect    Op = 16
	OpFallocate  Op = 17
	OpOpenat     Op = 18
	OpClose      Op = 19
	OpStatx      Op = 21
	OpRead       Op = 22
	OpWrite      Op = 23
	OpSend       Op = 26
	OpRecv       Op = 27
	OpURingCmd   Op = 46
)

var opNames = map[Op]string{
	OpNop: "IORING_OP_NOP", OpReadv: "IORING_OP_READV", OpWritev: "IORING_OP_WRITEV",
	OpFsync: "IORING_OP_FSYNC", OpReadFixed: "IORING_OP_READ_FIXED", OpWriteFixed: "IORING_OP_WRITE_FIXED",
	OpAccept: "IORING_OP_ACCEPT", OpConnect: "IORING_OP_CONNECT", OpFallocate: "IORING_OP_FALLOCATE",
	OpOpenat: "IORING_OP_OPENAT", OpClose: "IORING_OP_CLOSE", OpStatx: "IORING_OP_STATX",
	OpRead: "IORING_OP_READ", OpWrite: "IORING_OP_WRITE", OpSend: "IORING_OP_SEND",
	OpRecv: "IORING_OP_RECV", OpURingCmd: "IORING_OP_URING_CMD",
}

func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return fmt.Sprintf("IORING_OP_%d", uint8(o))
}

// Probe is the kernel's answer to IORING_REGISTER_PROBE: which opcodes it supports.
type Probe struct {
	lastOp    Op
	supported [256]bool
}

// Supported reports whether the kernel offers op.
func (p *Probe) Supported(op Op) bool { return p.supported[op] }

// LastOp is the highest opcode the kernel knows.
func (p *Probe) LastOp() Op { return p.lastOp }

// Probe returns the ring's probe, taken at setup.
func (r *Ring) Probe() *Probe { return &r.probe }

// Require returns an *UnsupportedOpError naming the first of ops the kernel lacks.
func (r *Ring) Require(ops ...Op) error {
	for _, op := range ops {
		if !r.probe.supported[op] {
			return &UnsupportedOpError{Op: op}
		}
	}
	return nil
}

// probeBuf mirrors struct io_uring_probe with room for 256 struct io_uring_probe_op.
type probeBuf struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
	ops    [256]struct {
		op    uint8
		resv  uint8
		flags uint16
		resv2 uint32
	}
}

const opSupported = 1 << 0

func (r *Ring) loadProbe() error {
	b := new(probeBuf)
	if err := r.registerProbe(b); err != nil {
		return fmt.Errorf("uring: IORING_REGISTER_PROBE: %w", err)
	}
	r.probe.lastOp = Op(b.lastOp)
	for i := 0; i < int(b.opsLen); i++ {
		if b.ops[i].flags&opSupported != 0 {
			r.probe.supported[b.ops[i].op] = true
		}
	}
	return nil
}
