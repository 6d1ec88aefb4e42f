package nvme

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
)

// Controller registers (NVMe base specification 2.0, section 3.1.4).
const (
	regCAP  = 0x00
	regVS   = 0x08
	regCC   = 0x14
	regCSTS = 0x1c
	regAQA  = 0x24
	regASQ  = 0x28
	regACQ  = 0x30
	regDB   = 0x1000

	ccEnable   = 1 << 0
	ccIOSQES   = 6 << 16 // 64-byte submission entries
	ccIOCQES   = 4 << 20 // 16-byte completion entries
	ccShnMask  = 3 << 14
	ccShnNorm  = 1 << 14
	cstsRdy    = 1 << 0
	cstsCFS    = 1 << 1
	cstsShst   = 3 << 2
	cstsShDone = 2 << 2

	adminEntries = 32
	// iovaBase is where the driver starts placing DMA memory in the device's address
	// space: above 4 GiB, clear of the x86 MSI window at 0xfee00000.
	iovaBase = 1 << 32
	hugePage = 2 << 20
)

// VFIOOptions tune OpenVFIO.
type VFIOOptions struct {
	// NSID is the namespace to drive; 0 means 1.
	NSID uint32
	// Interrupts makes queues wait for MSI-X interrupts through eventfds instead of
	// polling their completion queues.
	Interrupts bool
	// MaxQueues is how many I/O queue pairs to ask the controller for (Set Features,
	// Number of Queues); 0 means 16. Each blockdev.Queue holds one pair.
	MaxQueues int
	// CommandTimeout is how long a command may run before the driver aborts it, and
	// how long the abort may take before the command fails with ErrTimeout; 0 means
	// 30 s.
	CommandTimeout time.Duration
	// SyncQueues is how many internal queue pairs serve ReadAt and WriteAt; 0 means 2.
	SyncQueues int
	// SysfsRoot is where sysfs is mounted; "" means /sys.
	SysfsRoot string
}

// VFIO is the user-level NVMe driver: a blockdev.Device over one namespace of a
// controller bound to vfio-pci. See the package doc for its lock order.
type VFIO struct {
	addr string
	opts VFIOOptions

	cfd, gfd, dfd int
	bar           []byte
	cc, csts      reg
	dstrd         uint
	mqes          int
	readyTimeout  time.Duration
	ctrl          ControllerInfo
	ns            NamespaceInfo
	nsid          uint32
	bs            int
	size          int64
	maxXfer       int
	nq            int
	efds          []int // MSI-X vector -> eventfd; empty when polling
	reqEfd        int   // vfio-pci's device request (unbind) eventfd, or -1
	watcherDone   chan struct{}

	adminMu sync.Mutex
	admin   adminQueue

	iovaMu   sync.Mutex
	nextIOVA uint64

	mu       sync.Mutex
	freeQIDs []uint16
	queues   map[*vqueue]struct{}
	shutDown bool // hardware released (Close after the last queue, or unbind)

	closed   atomic.Bool
	closedCh chan struct{}
	stopping atomic.Bool
	gone     atomic.Bool // the kernel asked for the device back
	failed   atomic.Bool // CSTS.CFS, not ready, or all ones
	syncQ    chan *vqueue
	syncN    atomic.Int32

	aborts, timeouts atomic.Int64
	hugeBytes        atomic.Int64 // DMA memory currently mapped from huge pages
}

var _ blockdev.Device = (*VFIO)(nil)

type adminQueue struct {
	mem        *dmaMem
	sq, cq     []byte
	data       []byte // one page for Identify and similar
	dataIOVA   uint64
	tail, head uint32
	phase      uint32
	cid        uint16
	sqDB, cqDB reg
}

type dmaMem struct {
	mem  []byte
	iova uint64
	huge bool
}

// OpenVFIO opens the controller at PCI address addr (e.g. 0000:00:04.0), which must
// already be bound to vfio-pci (Bind), resets and enables it, and returns a Device
// over its namespace. It needs root (or access to /dev/vfio) and an IOMMU.
func OpenVFIO(addr string, o VFIOOptions) (*VFIO, error) {
	if o.NSID == 0 {
		o.NSID = 1
	}
	if o.MaxQueues <= 0 {
		o.MaxQueues = 16
	}
	o.MaxQueues = min(o.MaxQueues, 1024)
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = 30 * time.Second
	}
	if o.SyncQueues <= 0 {
		o.SyncQueues = 2
	}
	if o.SysfsRoot == "" {
		o.SysfsRoot = "/sys"
	}
	v := &VFIO{addr: addr, opts: o, cfd: -1, gfd: -1, dfd: -1, reqEfd: -1, nextIOVA: iovaBase,
		queues: map[*vqueue]struct{}{}, closedCh: make(chan struct{}), syncQ: make(chan *vqueue, o.SyncQueues)}
	if err := v.open(); err != nil {
		v.release()
		return nil, err
	}
	return v, nil
}

func (v *VFIO) open() error {
	dev := filepath.Join(v.opts.SysfsRoot, "bus/pci/devices", v.addr)
	if drv := boundDriver(dev); drv != "vfio-pci" {
		if drv == "" {
			drv = "no driver"
		}
		return fmt.Errorf("nvme: %s is bound to %s, not vfio-pci: run `polytropon nvme bind %s` first", v.addr, drv, v.addr)
	}
	g, err := os.Readlink(filepath.Join(dev, "iommu_group"))
	if err != nil {
		return fmt.Errorf("nvme: %s has no IOMMU group (is the IOMMU enabled?): %w", v.addr, err)
	}
	if v.cfd, err = unix.Open("/dev/vfio/vfio", unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("nvme: open /dev/vfio/vfio: %w", err)
	}
	if ver, err := ioctlVal(v.cfd, vfioGetAPIVersion, 0); err != nil || ver != vfioAPIVersion {
		return fmt.Errorf("nvme: VFIO API version %d (%v), want %d", ver, err, vfioAPIVersion)
	}
	if ok, _ := ioctlVal(v.cfd, vfioCheckExtension, vfioType1v2IOMMU); ok != 1 {
		return errors.New("nvme: VFIO lacks the type 1 v2 IOMMU")
	}
	gpath := "/dev/vfio/" + filepath.Base(g)
	if v.gfd, err = unix.Open(gpath, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		if err == unix.EBUSY {
			return fmt.Errorf("nvme: %s is in use by another process: %w", gpath, err)
		}
		return fmt.Errorf("nvme: open %s: %w", gpath, err)
	}
	if ok, err := vfioGroupViable(v.gfd); err != nil || !ok {
		return fmt.Errorf("nvme: IOMMU group %s is not viable (every device in it must be bound to vfio-pci or unbound): %v", filepath.Base(g), err)
	}
	if err := vfioSetContainer(v.gfd, v.cfd); err != nil {
		return fmt.Errorf("nvme: VFIO_GROUP_SET_CONTAINER: %w", err)
	}
	if _, err := ioctlVal(v.cfd, vfioSetIOMMU, vfioType1v2IOMMU); err != nil {
		return fmt.Errorf("nvme: VFIO_SET_IOMMU(type 1 v2): %w", err)
	}
	if v.dfd, err = vfioDeviceFD(v.gfd, v.addr); err != nil {
		return fmt.Errorf("nvme: VFIO_GROUP_GET_DEVICE_FD(%s): %w", v.addr, err)
	}
	if err := v.enableBusMaster(); err != nil {
		return err
	}
	if err := v.mapBAR(); err != nil {
		return err
	}
	if err := v.resetAndEnable(); err != nil {
		return err
	}
	if err := v.identify(); err != nil {
		return err
	}
	if err := v.setupInterrupts(); err != nil {
		return err
	}
	return nil
}

func boundDriver(dev string) string {
	l, err := os.Readlink(filepath.Join(dev, "driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(l)
}

func (v *VFIO) enableBusMaster() error {
	cfg, err := vfioRegion(v.dfd, vfioPCIConfigRegion)
	if err != nil {
		return fmt.Errorf("nvme: config space region: %w", err)
	}
	var b [2]byte
	if _, err := unix.Pread(v.dfd, b[:], int64(cfg.Offset)+4); err != nil {
		return fmt.Errorf("nvme: read PCI command register: %w", err)
	}
	cmd := uint16(b[0]) | uint16(b[1])<<8 | 0x6 // memory space, bus master
	b[0], b[1] = byte(cmd), byte(cmd>>8)
	if _, err := unix.Pwrite(v.dfd, b[:], int64(cfg.Offset)+4); err != nil {
		return fmt.Errorf("nvme: write PCI command register: %w", err)
	}
	return nil
}

func (v *VFIO) mapBAR() error {
	r, err := vfioRegion(v.dfd, vfioPCIBAR0Region)
	if err != nil {
		return fmt.Errorf("nvme: BAR0 region: %w", err)
	}
	if r.Flags&vfioRegionInfoFlagMmap == 0 || r.Size < 0x2000 {
		return fmt.Errorf("nvme: BAR0 (%d bytes, flags %#x) cannot be mapped", r.Size, r.Flags)
	}
	// The doorbells of 1024 queue pairs at the largest stride fit in 64 KiB; map no
	// more, as the MSI-X table may follow and vfio refuses to map it.
	size := int(min(r.Size, 1<<16))
	if v.bar, err = unix.Mmap(v.dfd, int64(r.Offset), size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		size = 0x2000
		if v.bar, err = unix.Mmap(v.dfd, int64(r.Offset), size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return fmt.Errorf("nvme: mmap BAR0: %w", err)
		}
	}
	v.cc, v.csts = barReg(v.bar, regCC), barReg(v.bar, regCSTS)
	return nil
}

func (v *VFIO) cap() uint64 {
	return uint64(barReg(v.bar, regCAP).load()) | uint64(barReg(v.bar, regCAP+4).load())<<32
}

// CAPInfo is what the driver uses of the CAP register.
type CAPInfo struct {
	MQES    int           // maximum queue entries
	DSTRD   uint          // doorbell stride: 4 << DSTRD bytes
	Timeout time.Duration // CAP.TO: worst case for CSTS.RDY to follow CC.EN
	NVMCSS  bool          // NVM command set supported
	MPSMin  int           // minimum memory page size in bytes
	MPSMax  int
}

// ParseCAP decodes the controller capabilities register.
func ParseCAP(c uint64) CAPInfo {
	return CAPInfo{
		MQES:    int(c&0xffff) + 1,
		DSTRD:   uint(c>>32) & 0xf,
		Timeout: time.Duration(c>>24&0xff) * 500 * time.Millisecond,
		NVMCSS:  c>>37&1 != 0,
		MPSMin:  4096 << (c >> 48 & 0xf),
		MPSMax:  4096 << (c >> 52 & 0xf),
	}
}

// DoorbellOffsets returns the BAR offsets of queue qid's submission tail and
// completion head doorbells.
func DoorbellOffsets(qid int, dstrd uint) (sq, cq int) {
	return regDB + (2*qid)*(4<<dstrd), regDB + (2*qid+1)*(4<<dstrd)
}

// waitCSTS waits until CSTS&mask == want, up to the CAP.TO limit (at least 1 s).
func (v *VFIO) waitCSTS(mask, want uint32, what string) error {
	deadline := time.Now().Add(max(v.readyTimeout, time.Second))
	for {
		s := v.csts.load()
		if s == 0xffffffff {
			return fmt.Errorf("nvme: %s: controller reads all ones (removed?): %w", what, ErrControllerFailed)
		}
		if s&mask == want {
			return nil
		}
		if s&cstsCFS != 0 && what != "reset" {
			return fmt.Errorf("nvme: %s: controller fatal status (CSTS %#x): %w", what, s, ErrControllerFailed)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nvme: %s: CSTS %#x after %v (CAP.TO): %w", what, s, v.readyTimeout, unix.ETIMEDOUT)
		}
		time.Sleep(time.Millisecond)
	}
}

func (v *VFIO) resetAndEnable() error {
	ci := ParseCAP(v.cap())
	if !ci.NVMCSS {
		return errors.New("nvme: controller does not support the NVM command set")
	}
	if ci.MPSMin > pageSize || ci.MPSMax < pageSize {
		return fmt.Errorf("nvme: controller page sizes %d..%d exclude 4096", ci.MPSMin, ci.MPSMax)
	}
	v.mqes, v.dstrd, v.readyTimeout = ci.MQES, ci.DSTRD, ci.Timeout
	if v.sqDBLimit(1) > len(v.bar) {
		return fmt.Errorf("nvme: BAR0 mapping of %d bytes holds no I/O doorbell at stride %d", len(v.bar), 4<<v.dstrd)
	}
	// Reset: clear CC.EN and wait for RDY to drop (a controller that failed earlier
	// may keep CFS set until then).
	v.cc.store(v.cc.load() &^ ccEnable)
	if err := v.waitCSTS(cstsRdy, 0, "reset"); err != nil {
		return err
	}
	mem, err := v.allocDMA(3 * pageSize)
	if err != nil {
		return err
	}
	a := &v.admin
	a.mem = mem
	a.sq, a.cq, a.data = mem.mem[:pageSize], mem.mem[pageSize:2*pageSize], mem.mem[2*pageSize:]
	a.dataIOVA = mem.iova + 2*pageSize
	a.phase = 1
	sq, cq := DoorbellOffsets(0, v.dstrd)
	a.sqDB, a.cqDB = barReg(v.bar, sq), barReg(v.bar, cq)
	barReg(v.bar, regAQA).store((adminEntries-1)<<16 | (adminEntries - 1))
	for _, r := range []struct {
		off int
		val uint64
	}{{regASQ, mem.iova}, {regACQ, mem.iova + pageSize}} {
		barReg(v.bar, r.off).store(uint32(r.val))
		barReg(v.bar, r.off+4).store(uint32(r.val >> 32))
	}
	v.cc.store(ccEnable | ccIOSQES | ccIOCQES) // CSS NVM, MPS 4 KiB, round robin
	return v.waitCSTS(cstsRdy, cstsRdy, "enable")
}

func (v *VFIO) sqDBLimit(qid int) int {
	_, cq := DoorbellOffsets(qid, v.dstrd)
	return cq + 4
}

func (v *VFIO) identify() error {
	if _, err := v.adminCmd(&Command{Opcode: adminIdentify, CDW10: identifyController}, true); err != nil {
		return fmt.Errorf("nvme: identify controller: %w", err)
	}
	var err error
	if v.ctrl, err = ParseIdentifyController(v.admin.data); err != nil {
		return err
	}
	if v.opts.NSID > v.ctrl.NN {
		return fmt.Errorf("nvme: namespace %d does not exist (the controller has %d)", v.opts.NSID, v.ctrl.NN)
	}
	v.nsid = v.opts.NSID
	if _, err := v.adminCmd(&Command{Opcode: adminIdentify, NSID: v.nsid, CDW10: identifyNamespace}, true); err != nil {
		return fmt.Errorf("nvme: identify namespace %d: %w", v.nsid, err)
	}
	if v.ns, err = ParseIdentifyNamespace(v.admin.data); err != nil {
		return err
	}
	if err := v.ns.check(fmt.Sprintf("%s namespace %d", v.addr, v.nsid)); err != nil {
		return err
	}
	v.bs = v.ns.BlockSize
	v.size = int64(v.ns.Blocks) * int64(v.bs)
	v.maxXfer = v.ctrl.MaxTransfer(pageSize, maxTransferLimit)
	want := uint32(v.opts.MaxQueues - 1)
	dw0, err := v.adminCmd(&Command{Opcode: adminSetFeatures, CDW10: featNumQueues, CDW11: want | want<<16}, false)
	if err != nil {
		return fmt.Errorf("nvme: set features (number of queues): %w", err)
	}
	v.nq = min(int(dw0&0xffff)+1, int(dw0>>16)+1, v.opts.MaxQueues)
	for len(v.bar) < v.sqDBLimit(v.nq) {
		v.nq--
	}
	for q := v.nq; q >= 1; q-- {
		v.freeQIDs = append(v.freeQIDs, uint16(q))
	}
	return nil
}

func (v *VFIO) setupInterrupts() error {
	if v.opts.Interrupts {
		n, err := vfioIRQCount(v.dfd, vfioPCIMSIXIRQIndex)
		if err != nil || n < 2 {
			return fmt.Errorf("nvme: %s offers %d MSI-X vectors (%v); use polling", v.addr, n, err)
		}
		n = min(n, v.nq+1)
		for i := 0; i < n; i++ {
			fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			if err != nil {
				return fmt.Errorf("nvme: eventfd: %w", err)
			}
			v.efds = append(v.efds, fd)
		}
		if err := vfioSetEventfds(v.dfd, vfioPCIMSIXIRQIndex, v.efds); err != nil {
			return fmt.Errorf("nvme: route %d MSI-X vectors to eventfds: %w", n, err)
		}
	}
	// The device request interrupt tells a user-level driver that the kernel wants the
	// device back (unbind, hot unplug); without it the unbind would wait for us.
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("nvme: eventfd: %w", err)
	}
	if n, _ := vfioIRQCount(v.dfd, vfioPCIReqIRQIndex); n < 1 || vfioSetEventfds(v.dfd, vfioPCIReqIRQIndex, []int{fd}) != nil {
		unix.Close(fd)
		return nil
	}
	v.reqEfd = fd
	v.watcherDone = make(chan struct{})
	go v.watch()
	return nil
}

// watch waits for vfio-pci's device request and then gives the device back: it
// detaches every queue (waiting for calls in progress, which notice v.gone), and
// releases BAR0 and the VFIO descriptors so the kernel's unbind can finish.
func (v *VFIO) watch() {
	defer close(v.watcherDone)
	var b [8]byte
	for {
		_, err := unix.Read(v.reqEfd, b[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || v.stopping.Load() {
			return
		}
		break
	}
	v.gone.Store(true)
	for {
		v.mu.Lock()
		if v.shutDown {
			v.mu.Unlock()
			return
		}
		busy := false
		for q := range v.queues {
			if !q.detach() {
				busy = true
			}
		}
		if !busy {
			v.adminMu.Lock()
			v.releaseLocked()
			v.adminMu.Unlock()
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

// Gone reports whether the kernel took the device back; Failed whether the
// controller failed. Either way every request fails from then on.
func (v *VFIO) Gone() bool { return v.gone.Load() }

// Failed reports a controller fatal status or a controller that stopped responding.
func (v *VFIO) Failed() bool { return v.failed.Load() }

// Aborts and Timeouts count commands the driver aborted and commands that failed
// with ErrTimeout.
func (v *VFIO) Aborts() int64 { return v.aborts.Load() }

// Timeouts counts commands failed with ErrTimeout.
func (v *VFIO) Timeouts() int64 { return v.timeouts.Load() }

// HugePageBytes is how much of the DMA memory mapped now comes from huge pages.
func (v *VFIO) HugePageBytes() int64 { return v.hugeBytes.Load() }

// Controller returns the controller's identity.
func (v *VFIO) Controller() ControllerInfo { return v.ctrl }

// Queues returns how many I/O queue pairs the controller granted.
func (v *VFIO) Queues() int { return v.nq }

// MaxTransfer is the largest request a queue accepts, in bytes.
func (v *VFIO) MaxTransfer() int { return v.maxXfer }

// Size implements blockdev.Device.
func (v *VFIO) Size() int64 { return v.size }

// BlockSize implements blockdev.Device.
func (v *VFIO) BlockSize() int { return v.bs }

// OptimalIOSize implements blockdev.Device.
func (v *VFIO) OptimalIOSize() int {
	o := max(v.ns.OptimalIO, 4096, v.bs)
	return min(o-o%v.bs, v.maxXfer)
}

// checkHealth marks the controller failed when CSTS says so and reports whether
// the hardware may still be used.
func (v *VFIO) checkHealth() error {
	if v.gone.Load() {
		return ErrGone
	}
	if v.failed.Load() {
		return ErrControllerFailed
	}
	s := v.csts.load()
	if s == 0xffffffff || s&cstsCFS != 0 || s&cstsRdy == 0 {
		v.failed.Store(true)
		return ErrControllerFailed
	}
	return nil
}

// adminCmd runs one admin command synchronously; data commands use v.admin.data.
func (v *VFIO) adminCmd(c *Command, data bool) (uint32, error) {
	v.adminMu.Lock()
	defer v.adminMu.Unlock()
	return v.adminCmdLocked(c, data)
}

func (v *VFIO) adminCmdLocked(c *Command, data bool) (uint32, error) {
	if v.bar == nil {
		return 0, ErrGone
	}
	a := &v.admin
	a.cid++
	c.CID = a.cid
	if data {
		c.PRP1 = a.dataIOVA
	}
	c.Encode(a.sq[a.tail*sqeSize:])
	a.tail = (a.tail + 1) % adminEntries
	a.sqDB.store(a.tail)
	// Admin commands get at least the controller's own ready timeout: a short I/O
	// timeout must not fail the controller's setup.
	deadline := time.Now().Add(max(v.opts.CommandTimeout, v.readyTimeout, 5*time.Second))
	for spins := 0; ; spins++ {
		st := cqStatus(a.cq, int(a.head))
		if (st>>16)&1 == a.phase {
			e := DecodeCompletion(a.cq[int(a.head)*cqeSize:])
			a.head++
			if a.head == adminEntries {
				a.head, a.phase = 0, a.phase^1
			}
			a.cqDB.store(a.head)
			if e.CID != c.CID {
				return 0, fmt.Errorf("nvme: admin completion for cid %d, expected %d", e.CID, c.CID)
			}
			return e.DW0, statusError(c.Opcode, e.Status)
		}
		if spins%64 == 63 {
			if err := v.checkHealthAdmin(); err != nil {
				return 0, err
			}
			if time.Now().After(deadline) {
				v.failed.Store(true)
				return 0, fmt.Errorf("nvme: admin opcode %#x: %w", c.Opcode, ErrTimeout)
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// checkHealthAdmin is checkHealth for admin commands, which also run while the
// controller is being set up (RDY is already 1 then).
func (v *VFIO) checkHealthAdmin() error {
	if v.gone.Load() {
		return ErrGone
	}
	s := v.csts.load()
	if s == 0xffffffff || s&cstsCFS != 0 {
		v.failed.Store(true)
		return ErrControllerFailed
	}
	return nil
}

// allocDMA maps size bytes (rounded up to pages) for the device: huge pages when the
// system has them free, else locked (pinned) small pages; then maps them at fresh
// IOVAs. IOVAs are never reused: the space above iovaBase is far larger than any
// run's allocations.
func (v *VFIO) allocDMA(size int) (*dmaMem, error) {
	size = (size + pageSize - 1) / pageSize * pageSize
	var mem []byte
	align := uint64(pageSize)
	if size >= hugePage/2 {
		hs := (size + hugePage - 1) / hugePage * hugePage
		m, err := unix.Mmap(-1, 0, hs, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_HUGETLB|unix.MAP_POPULATE)
		if err == nil {
			mem, align = m, hugePage
		}
	}
	if mem == nil {
		m, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_POPULATE|unix.MAP_LOCKED)
		if err != nil {
			// RLIMIT_MEMLOCK: VFIO pins the pages anyway when it maps them.
			if m, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_POPULATE); err != nil {
				return nil, fmt.Errorf("nvme: DMA memory of %d bytes: %w", size, err)
			}
		}
		mem = m
	}
	iova := v.allocIOVA(len(mem), align)
	if err := vfioMapDMA(v.cfd, mem, iova); err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	m := &dmaMem{mem: mem, iova: iova, huge: align == hugePage}
	if m.huge {
		v.hugeBytes.Add(int64(len(mem)))
	}
	return m, nil
}

// allocIOVA reserves size bytes of IOVA space aligned to align.
func (v *VFIO) allocIOVA(size int, align uint64) uint64 {
	v.iovaMu.Lock()
	defer v.iovaMu.Unlock()
	iova := (v.nextIOVA + align - 1) / align * align
	v.nextIOVA = iova + uint64(size)
	return iova
}

// freeDMALocked unmaps m from the device (unless the container is already gone) and
// from the process. v.mu is held.
func (v *VFIO) freeDMALocked(m *dmaMem) {
	if m == nil {
		return
	}
	if !v.shutDown {
		vfioUnmapDMA(v.cfd, m.iova, len(m.mem))
	}
	if m.huge {
		v.hugeBytes.Add(-int64(len(m.mem)))
	}
	unix.Munmap(m.mem)
}

// ReadAt implements blockdev.Device.
func (v *VFIO) ReadAt(p []byte, off int64) (int, error) {
	if v.closed.Load() {
		return 0, blockdev.ErrClosed
	}
	n, err := blockdev.ClampRead(p, off, v.bs, v.size)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	got, err := v.syncIO(blockdev.OpRead, p[:n], off)
	if err != nil {
		return got, err
	}
	return blockdev.ShortRead(got, len(p))
}

// WriteAt implements blockdev.Device.
func (v *VFIO) WriteAt(p []byte, off int64) (int, error) {
	if v.closed.Load() {
		return 0, blockdev.ErrClosed
	}
	if err := blockdev.CheckWrite(p, off, v.bs, v.size); err != nil {
		return 0, err
	}
	return v.syncIO(blockdev.OpWrite, p, off)
}

// Flush implements blockdev.Device with the NVMe Flush command.
func (v *VFIO) Flush() error {
	if v.closed.Load() {
		return blockdev.ErrClosed
	}
	_, err := v.syncIO(blockdev.OpFlush, nil, 0)
	return err
}

// syncIO runs one request, split at the maximum transfer, on an internal queue.
func (v *VFIO) syncIO(op blockdev.Op, p []byte, off int64) (int, error) {
	q, err := v.getSyncQueue()
	if err != nil {
		return 0, err
	}
	defer v.putSyncQueue(q)
	done := 0
	for {
		n := min(len(p)-done, v.maxXfer)
		q.one[0] = blockdev.Request{Op: op, Buf: p[done : done+n], Off: off + int64(done)}
		if _, err := q.Submit(q.one[:]); err != nil {
			return done, err
		}
		if _, err := q.Poll(1, q.oneOut[:]); err != nil {
			return done, err
		}
		if err := q.oneOut[0].Err; err != nil {
			return done, err
		}
		done += n
		if done >= len(p) {
			return done, nil
		}
	}
}

func (v *VFIO) getSyncQueue() (*vqueue, error) {
	select {
	case q := <-v.syncQ:
		return q, nil
	default:
	}
	if v.syncN.Add(1) <= int32(v.opts.SyncQueues) {
		q, err := v.newQueue(1)
		if err != nil {
			v.syncN.Add(-1)
			return nil, err
		}
		return q, nil
	}
	v.syncN.Add(-1)
	select {
	case q := <-v.syncQ:
		return q, nil
	case <-v.closedCh:
		return nil, blockdev.ErrClosed
	}
}

func (v *VFIO) putSyncQueue(q *vqueue) {
	v.syncQ <- q // never blocks: at most SyncQueues exist
	if v.closed.Load() {
		v.drainSyncQueues()
	}
}

func (v *VFIO) drainSyncQueues() {
	for {
		select {
		case q := <-v.syncQ:
			q.Close()
		default:
			return
		}
	}
}

// WriteZeroes makes n bytes at off read back as zeroes (NVMe Write Zeroes).
func (v *VFIO) WriteZeroes(off, n int64) error {
	if v.closed.Load() {
		return blockdev.ErrClosed
	}
	if err := checkRange(off, n, v.bs, v.size); err != nil {
		return err
	}
	if !v.ctrl.SupportsWriteZeroes() {
		return fmt.Errorf("nvme: %s does not support Write Zeroes: %w", v.addr, unix.EOPNOTSUPP)
	}
	return v.rawSync(func(q *vqueue) error {
		for blk, end := off/int64(v.bs), (off+n)/int64(v.bs); blk < end; {
			nb := min(end-blk, maxZeroBlocks)
			c := Command{Opcode: ioWriteZeroes, NSID: v.nsid}
			c.rw(uint64(blk), uint32(nb))
			if err := q.raw(&c, nil); err != nil {
				return err
			}
			blk += nb
		}
		return nil
	})
}

// Deallocate marks n bytes at off unused (Dataset Management, deallocate).
func (v *VFIO) Deallocate(off, n int64) error {
	if v.closed.Load() {
		return blockdev.ErrClosed
	}
	if err := checkRange(off, n, v.bs, v.size); err != nil {
		return err
	}
	if !v.ctrl.SupportsDSM() {
		return fmt.Errorf("nvme: %s does not support Dataset Management: %w", v.addr, unix.EOPNOTSUPP)
	}
	return v.rawSync(func(q *vqueue) error {
		for blk, end := uint64(off/int64(v.bs)), uint64((off+n)/int64(v.bs)); blk < end; {
			nr, next := EncodeDSMRanges(q.slots[0].bounce[:pageSize], blk, end)
			c := Command{Opcode: ioDSM, NSID: v.nsid, CDW10: uint32(nr - 1), CDW11: 1 << 2}
			if err := q.raw(&c, q.slots[0].bounce[:nr*16]); err != nil {
				return err
			}
			blk = next
		}
		return nil
	})
}

func (v *VFIO) rawSync(fn func(q *vqueue) error) error {
	q, err := v.getSyncQueue()
	if err != nil {
		return err
	}
	defer v.putSyncQueue(q)
	return fn(q)
}

// NewQueue implements blockdev.Device: one I/O submission/completion queue pair.
func (v *VFIO) NewQueue(depth int) (blockdev.Queue, error) {
	if v.closed.Load() {
		return nil, blockdev.ErrClosed
	}
	if depth < 1 || depth > 4096 {
		return nil, fmt.Errorf("nvme: queue depth %d: want 1..4096", depth)
	}
	return v.newQueue(depth)
}

// Close implements blockdev.Device. The controller is shut down when the last queue
// closes (at once when none is open).
func (v *VFIO) Close() error {
	if v.closed.Swap(true) {
		return blockdev.ErrClosed
	}
	close(v.closedCh)
	v.drainSyncQueues()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.queues) == 0 {
		v.shutdownLocked()
	}
	return nil
}

// shutdownLocked shuts the controller down normally and releases it. v.mu is held.
func (v *VFIO) shutdownLocked() {
	if v.shutDown {
		return
	}
	v.adminMu.Lock()
	defer v.adminMu.Unlock()
	if v.failed.Load() && v.bar != nil {
		v.cc.store(0) // no orderly shutdown from a failed controller: just disable it
	} else if !v.gone.Load() && v.bar != nil {
		v.cc.store(v.cc.load()&^ccShnMask | ccShnNorm)
		v.waitCSTS(cstsShst, cstsShDone, "shutdown")
		v.cc.store(v.cc.load() &^ ccEnable)
		v.waitCSTS(cstsRdy, 0, "reset")
	}
	v.releaseLocked()
}

// releaseLocked gives the hardware back: interrupts, DMA, BAR0, descriptors. v.mu
// and v.adminMu are held.
func (v *VFIO) releaseLocked() {
	if v.shutDown {
		return
	}
	if v.admin.mem != nil {
		v.freeDMALocked(v.admin.mem)
		v.admin.mem = nil
	}
	v.release()
}

func (v *VFIO) release() {
	v.shutDown = true
	if v.reqEfd >= 0 {
		if v.watcherDone != nil && !v.gone.Load() {
			v.stopping.Store(true)
			unix.Write(v.reqEfd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
			<-v.watcherDone
		}
		if v.dfd >= 0 {
			vfioSetEventfds(v.dfd, vfioPCIReqIRQIndex, nil)
		}
	}
	if len(v.efds) > 0 && v.dfd >= 0 {
		vfioSetEventfds(v.dfd, vfioPCIMSIXIRQIndex, nil)
	}
	if v.bar != nil {
		unix.Munmap(v.bar)
		v.bar = nil
	}
	for _, fd := range []int{v.dfd, v.gfd, v.cfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	v.dfd, v.gfd, v.cfd = -1, -1, -1
	// Eventfds stay open until the queues that wait on them close; the process
	// holds a handful, closed with the device when nothing uses them.
	if len(v.queues) == 0 {
		v.closeEventfds()
	}
}

func (v *VFIO) closeEventfds() {
	for _, fd := range v.efds {
		unix.Close(fd)
	}
	v.efds = nil
	if v.reqEfd >= 0 && (v.watcherDone == nil || chanClosed(v.watcherDone)) {
		unix.Close(v.reqEfd)
		v.reqEfd = -1
	}
}

func chanClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// PCIAddress is the controller's PCI address.
func (v *VFIO) PCIAddress() string { return v.addr }
