package nvme

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/alignedbuf"
	"github.com/polytropon/polytropon/blockdev/ringqueue"
	"github.com/polytropon/polytropon/drivers/uring"
)

// maxTransferLimit bounds one command's data whatever the controller allows: the
// kernel's passthrough path maps user pages into one request, and the VFIO driver
// keeps a bounce buffer of this size per queue slot.
const maxTransferLimit = 128 << 10

// Passthrough is a blockdev.Device over an NVMe generic character device
// (/dev/ngXnY). Synchronous calls use NVME_IOCTL_IO_CMD through *os.File (whose
// descriptor reference counting makes Close safe against concurrent calls); queues
// are blockdev/ringqueue queues on io_uring rings with SQE128|CQE32 that register
// the file, so requests in flight at Close still complete.
type Passthrough struct {
	f       *os.File
	path    string
	nsid    uint32
	ctrl    ControllerInfo
	ns      NamespaceInfo
	size    int64
	bs      int
	maxXfer int
	closed  atomic.Bool
}

var _ blockdev.Device = (*Passthrough)(nil)

// OpenPassthrough opens a namespace's generic character device, e.g. /dev/ng0n1.
// It needs CAP_SYS_ADMIN for the Identify commands.
func OpenPassthrough(path string) (*Passthrough, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("nvme: open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		f.Close()
		return nil, fmt.Errorf("nvme: %s is not an NVMe generic character device (/dev/ngXnY)", path)
	}
	d := &Passthrough{f: f, path: path}
	if err := d.identify(); err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func (d *Passthrough) control(fn func(fd uintptr) error) error {
	rc, err := d.f.SyscallConn()
	if err != nil {
		return blockdev.ErrClosed
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(fd) }); err != nil {
		return blockdev.ErrClosed
	}
	return ferr
}

func (d *Passthrough) identify() error {
	buf, err := alignedbuf.Alloc(4096)
	if err != nil {
		return err
	}
	defer alignedbuf.Free(buf)
	return d.control(func(fd uintptr) error {
		nsid, err := ioctlNSID(fd)
		if err != nil {
			return fmt.Errorf("nvme: NVME_IOCTL_ID on %s: %w", d.path, err)
		}
		d.nsid = nsid
		admin := func(nsid, cns uint32) error {
			c := passthruCmd{Opcode: adminIdentify, NSID: nsid, Addr: bufAddr(buf), DataLen: 4096, CDW10: cns}
			st, err := ioctlCmd(fd, ioctlAdminCmd, &c)
			if err == nil {
				err = statusError(adminIdentify, uint16(st))
			}
			if err != nil {
				return fmt.Errorf("nvme: identify (cns %d) on %s: %w", cns, d.path, err)
			}
			return nil
		}
		if err := admin(0, identifyController); err != nil {
			return err
		}
		if d.ctrl, err = ParseIdentifyController(buf); err != nil {
			return err
		}
		if err := admin(nsid, identifyNamespace); err != nil {
			return err
		}
		if d.ns, err = ParseIdentifyNamespace(buf); err != nil {
			return err
		}
		if err := d.ns.check(d.path); err != nil {
			return err
		}
		d.geometry()
		return nil
	})
}

func (ns *NamespaceInfo) check(what string) error {
	if ns.Metadata != 0 {
		return fmt.Errorf("nvme: %s is formatted with %d metadata bytes per block; only 0 is supported", what, ns.Metadata)
	}
	if ns.BlockSize > alignedbuf.PageSize {
		return fmt.Errorf("nvme: %s has %d-byte blocks; blockdev needs at most the page size", what, ns.BlockSize)
	}
	return nil
}

func (d *Passthrough) geometry() {
	d.bs = d.ns.BlockSize
	d.size = int64(d.ns.Blocks) * int64(d.bs)
	d.maxXfer = d.ctrl.MaxTransfer(pageSize, maxTransferLimit)
}

// NSID is the namespace's identifier; Controller what Identify Controller said.
func (d *Passthrough) NSID() uint32 { return d.nsid }

// Controller returns the controller's identity.
func (d *Passthrough) Controller() ControllerInfo { return d.ctrl }

// MaxTransfer is the largest request a queue accepts, in bytes.
func (d *Passthrough) MaxTransfer() int { return d.maxXfer }

// Size implements blockdev.Device.
func (d *Passthrough) Size() int64 { return d.size }

// BlockSize implements blockdev.Device.
func (d *Passthrough) BlockSize() int { return d.bs }

// OptimalIOSize implements blockdev.Device.
func (d *Passthrough) OptimalIOSize() int {
	o := max(d.ns.OptimalIO, 4096, d.bs)
	return min(o-o%d.bs, d.maxXfer)
}

func (d *Passthrough) ioCmd(c *passthruCmd) error {
	return d.control(func(fd uintptr) error {
		st, err := ioctlCmd(fd, ioctlIOCmd, c)
		if err != nil {
			return err
		}
		return statusError(c.Opcode, uint16(st))
	})
}

func (d *Passthrough) rwCmd(op uint8, p []byte, off int64) passthruCmd {
	c := passthruCmd{Opcode: op, NSID: d.nsid, Addr: bufAddr(p), DataLen: uint32(len(p))}
	slba := uint64(off) / uint64(d.bs)
	c.CDW10, c.CDW11, c.CDW12 = uint32(slba), uint32(slba>>32), uint32(len(p)/d.bs-1)
	return c
}

// chunks runs op over p in pieces of at most the maximum transfer.
func (d *Passthrough) chunks(op uint8, p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n := min(len(p)-done, d.maxXfer)
		c := d.rwCmd(op, p[done:done+n], off+int64(done))
		if err := d.ioCmd(&c); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// ReadAt implements blockdev.Device.
func (d *Passthrough) ReadAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, blockdev.ErrClosed
	}
	n, err := blockdev.ClampRead(p, off, d.bs, d.size)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	got, err := d.chunks(ioRead, p[:n], off)
	if err != nil {
		return got, err
	}
	return blockdev.ShortRead(got, len(p))
}

// WriteAt implements blockdev.Device.
func (d *Passthrough) WriteAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, blockdev.ErrClosed
	}
	if err := blockdev.CheckWrite(p, off, d.bs, d.size); err != nil {
		return 0, err
	}
	return d.chunks(ioWrite, p, off)
}

// Flush implements blockdev.Device with the NVMe Flush command.
func (d *Passthrough) Flush() error {
	if d.closed.Load() {
		return blockdev.ErrClosed
	}
	c := passthruCmd{Opcode: ioFlush, NSID: d.nsid}
	return d.ioCmd(&c)
}

// checkRange validates a write zeroes or deallocate range.
func checkRange(off, n int64, bs int, size int64) error {
	if off < 0 || off%int64(bs) != 0 {
		return &blockdev.AlignmentError{What: "offset", Value: off, Align: bs}
	}
	if n <= 0 || n%int64(bs) != 0 {
		return &blockdev.AlignmentError{What: "length", Value: n, Align: bs}
	}
	if off+n > size {
		return &blockdev.RangeError{Off: off, Len: n, Size: size}
	}
	return nil
}

// maxZeroBlocks is the most blocks one Write Zeroes command covers (NLB is 16 bits).
const maxZeroBlocks = 1 << 16

// WriteZeroes makes n bytes at off read back as zeroes (NVMe Write Zeroes).
func (d *Passthrough) WriteZeroes(off, n int64) error {
	if d.closed.Load() {
		return blockdev.ErrClosed
	}
	if err := checkRange(off, n, d.bs, d.size); err != nil {
		return err
	}
	if !d.ctrl.SupportsWriteZeroes() {
		return fmt.Errorf("nvme: %s does not support Write Zeroes: %w", d.path, unix.EOPNOTSUPP)
	}
	for blk, end := off/int64(d.bs), (off+n)/int64(d.bs); blk < end; {
		nb := min(end-blk, maxZeroBlocks)
		c := passthruCmd{Opcode: ioWriteZeroes, NSID: d.nsid, CDW10: uint32(blk), CDW11: uint32(uint64(blk) >> 32), CDW12: uint32(nb - 1)}
		if err := d.ioCmd(&c); err != nil {
			return err
		}
		blk += nb
	}
	return nil
}

// Deallocate tells the controller n bytes at off are unused (Dataset Management,
// deallocate); they may read back as zeroes or as old data, per the controller.
func (d *Passthrough) Deallocate(off, n int64) error {
	if d.closed.Load() {
		return blockdev.ErrClosed
	}
	if err := checkRange(off, n, d.bs, d.size); err != nil {
		return err
	}
	if !d.ctrl.SupportsDSM() {
		return fmt.Errorf("nvme: %s does not support Dataset Management: %w", d.path, unix.EOPNOTSUPP)
	}
	buf, err := alignedbuf.Alloc(4096)
	if err != nil {
		return err
	}
	defer alignedbuf.Free(buf)
	for blk, end := off/int64(d.bs), (off+n)/int64(d.bs); blk < end; {
		nr, next := EncodeDSMRanges(buf, uint64(blk), uint64(end))
		c := passthruCmd{Opcode: ioDSM, NSID: d.nsid, Addr: bufAddr(buf), DataLen: uint32(nr * 16), CDW10: uint32(nr - 1), CDW11: 1 << 2}
		if err := d.ioCmd(&c); err != nil {
			return err
		}
		blk = int64(next)
	}
	return nil
}

// Close implements blockdev.Device.
func (d *Passthrough) Close() error {
	if d.closed.Swap(true) {
		return blockdev.ErrClosed
	}
	return d.f.Close()
}

// NewQueue implements blockdev.Device: an io_uring queue of NVMe passthrough
// commands (blockdev/ringqueue's core, with SQE128|CQE32 for URING_CMD).
func (d *Passthrough) NewQueue(depth int) (blockdev.Queue, error) {
	if d.closed.Load() {
		return nil, blockdev.ErrClosed
	}
	if depth < 1 || depth > 4096 {
		return nil, fmt.Errorf("nvme: queue depth %d: want 1..4096", depth)
	}
	return ringqueue.New(ptOps{d}, ringqueue.Config{Depth: depth, File: d.f,
		Ring:    []uring.Option{uring.WithSQE128(), uring.WithCQE32(), uring.WithCQSize(uint32(2 * depth))},
		Require: []uring.Op{uring.OpURingCmd}})
}

// ptOps is the passthrough device's half of a queue (ringqueue.Device): each
// request is one NVMe command; a slot's tag is the command's opcode, for its
// status.
type ptOps struct{ d *Passthrough }

var _ ringqueue.Device = ptOps{}

// Check implements ringqueue.Device: alignment, range and the controller's
// maximum transfer.
func (o ptOps) Check(i int, r *blockdev.Request) (int, uint8, error) {
	d := o.d
	switch r.Op {
	case blockdev.OpRead:
		n, err := blockdev.ClampRead(r.Buf, r.Off, d.bs, d.size)
		if err == nil && n > d.maxXfer {
			err = &TransferTooLargeError{Len: len(r.Buf), Max: d.maxXfer}
		}
		return n, ioRead, err
	case blockdev.OpWrite:
		err := blockdev.CheckWrite(r.Buf, r.Off, d.bs, d.size)
		if err == nil && len(r.Buf) > d.maxXfer {
			err = &TransferTooLargeError{Len: len(r.Buf), Max: d.maxXfer}
		}
		return len(r.Buf), ioWrite, err
	case blockdev.OpFlush:
		return 0, ioFlush, nil
	}
	return 0, 0, fmt.Errorf("nvme: request %d has unknown %v", i, r.Op)
}

// Prep implements ringqueue.Device: the command in the SQE's URING_CMD area.
func (o ptOps) Prep(ring *uring.Ring, s *uring.SQE, r *blockdev.Request, sl *ringqueue.Slot, ud uint64) {
	d := o.d
	c := passthruCmd{Opcode: sl.Tag, NSID: d.nsid}
	if sl.Tag != ioFlush {
		c = d.rwCmd(sl.Tag, r.Buf[:sl.N], r.Off)
	}
	s.PrepURingCmd(0, uringCmdIO, ud)
	s.UseFixedFile()
	putCmd(ring.Cmd(s), &c)
}

// Complete implements ringqueue.Device: a positive result is the command's
// NVMe status.
func (o ptOps) Complete(res int32, sl *ringqueue.Slot) blockdev.Completion {
	if res > 0 {
		return blockdev.Completion{Err: statusError(sl.Tag, uint16(res))}
	}
	return blockdev.Completion{N: sl.N}
}

// Closed implements ringqueue.Device.
func (o ptOps) Closed() bool { return o.d.closed.Load() }
