// Package nvme is polytropon's NVMe access: two blockdev.Device implementations and
// the tools to hand a controller from the kernel to user space and back.
//
//   - Passthrough drives one namespace through the kernel's NVMe generic character
//     device (/dev/ngXnY): each queue is an io_uring (blockdev/ringqueue's core on
//     drivers/uring, as blockdev/file's) with 128-byte submission and 32-byte
//     completion entries carrying NVME_URING_CMD_IO, so the kernel's driver keeps
//     the controller while reads and writes skip the block layer.
//   - VFIO is a user-level driver: the controller is bound to vfio-pci, its BAR0 is
//     mapped into the process, and the driver owns reset, the admin queue and one I/O
//     queue pair per blockdev.Queue, with DMA memory mapped at IOVAs through the IOMMU
//     (VFIO type 1 v2 container).
//   - List, Bind and Unbind read and change sysfs under a given root, so they run
//     against a fake tree in tests.
//
// It is not a general NVMe library: one namespace per Device, the NVM command set,
// no metadata, no fused commands, no namespace management.
//
// # Wire formats
//
// A submission entry is 64 bytes and a completion entry 16, little endian (NVMe base
// specification 2.0, figures 88 and 89):
//
//	SQE  0: opcode | flags<<8 | cid<<16     CQE  0: dw0 (command specific)
//	     4: nsid                                 4: dw1
//	  8-15: cdw2, cdw3                           8: sq head | sq id<<16
//	 16-23: metadata pointer                    12: cid | phase<<16 | status<<17
//	 24-31: PRP1    32-39: PRP2
//	 40-63: cdw10 .. cdw15
//
// A transfer of more than two memory pages puts the first page's address in PRP1 and
// the address of a PRP list (one 8-byte entry per further page) in PRP2; see BuildPRP.
//
// # Invariants
//
// Geometry (block size, size, maximum transfer) is read with Identify when a Device
// opens and never changes. Every request is checked against the blockdev rules before
// it reaches the controller, so a controller only ever sees in-range, block-aligned
// commands. Error statuses keep their NVMe status code type and code (*StatusError).
//
// VFIO data path: a queue copies between the caller's buffer and a bounce buffer of
// the maximum transfer per slot, mapped once at a fixed IOVA, unless the buffer lies
// in memory registered with the queue (blockdev.BufferRegistrar), which is mapped for
// the controller once and used in place (zero copy). A request costs no system call (one doorbell store to
// submit a batch, one to acknowledge completions; with Interrupts a wait is a poll(2)
// on the queue's MSI-X eventfd). Commands past VFIOOptions.CommandTimeout are aborted
// and then failed with ErrTimeout; their slots are reused only after the controller
// completes them. A failed controller (CSTS.CFS, RDY dropped, all-ones reads) fails
// everything in flight with ErrControllerFailed. When the kernel asks for the device
// back (vfio-pci's request interrupt on unbind), a watcher goroutine marks the device
// gone, waits until no queue is inside a call, detaches them all (an atomic
// idle/busy/detached word per queue, so the hot path takes no lock), releases BAR0
// and the VFIO descriptors, and every later call fails with ErrGone. Device.Close
// shuts the controller down (CC.SHN, then CC.EN=0) when its last queue closes. DMA
// memory comes from 2 MiB huge pages when the system has free ones, else from locked
// small pages; IOVAs are handed out upwards from 4 GiB and never reused.
//
// Lock order (VFIO): VFIO.mu before VFIO.adminMu before VFIO.iovaMu. Queues have no
// locks: a queue is owned by one goroutine, and its detach state is one atomic word.
// Passthrough has no locks (its closed flag is atomic).
//
// Test and measure: `make nvme-test` boots QEMU with an emulated NVMe controller
// behind an emulated IOMMU and runs the guest tests (conformance, integrity, faults,
// no allocation per request) on both devices; on real hardware `polytropon perf
// blockdev --dev /dev/ngXnY --vs-fio` (beside fio's io_uring_cmd engine), and
// `--dev nvme:PCIADDR` after `polytropon nvme bind`.
package nvme

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Admin and NVM opcodes used here.
const (
	adminDeleteSQ    = 0x00
	adminCreateSQ    = 0x01
	adminDeleteCQ    = 0x04
	adminCreateCQ    = 0x05
	adminIdentify    = 0x06
	adminAbort       = 0x08
	adminSetFeatures = 0x09

	ioFlush       = 0x00
	ioWrite       = 0x01
	ioRead        = 0x02
	ioWriteZeroes = 0x08
	ioDSM         = 0x09

	featNumQueues = 0x07

	identifyNamespace  = 0
	identifyController = 1

	sqeSize = 64
	cqeSize = 16
	// pageSize is the memory page size the driver programs (CC.MPS = 0).
	pageSize = 4096
)

// Command is one NVMe submission entry before encoding.
type Command struct {
	Opcode     uint8
	CID        uint16
	NSID       uint32
	PRP1, PRP2 uint64
	CDW10      uint32
	CDW11      uint32
	CDW12      uint32
	CDW13      uint32
	CDW14      uint32
	CDW15      uint32
}

// Encode writes c as a 64-byte submission entry into b.
func (c *Command) Encode(b []byte) {
	_ = b[sqeSize-1]
	binary.LittleEndian.PutUint32(b[0:], uint32(c.Opcode)|uint32(c.CID)<<16)
	binary.LittleEndian.PutUint32(b[4:], c.NSID)
	clear(b[8:24])
	binary.LittleEndian.PutUint64(b[24:], c.PRP1)
	binary.LittleEndian.PutUint64(b[32:], c.PRP2)
	binary.LittleEndian.PutUint32(b[40:], c.CDW10)
	binary.LittleEndian.PutUint32(b[44:], c.CDW11)
	binary.LittleEndian.PutUint32(b[48:], c.CDW12)
	binary.LittleEndian.PutUint32(b[52:], c.CDW13)
	binary.LittleEndian.PutUint32(b[56:], c.CDW14)
	binary.LittleEndian.PutUint32(b[60:], c.CDW15)
}

// rw sets the LBA range of a read, write or write zeroes command.
func (c *Command) rw(slba uint64, nlb uint32) {
	c.CDW10 = uint32(slba)
	c.CDW11 = uint32(slba >> 32)
	c.CDW12 = nlb - 1
}

// Completion is a decoded completion entry.
type Completion struct {
	DW0    uint32
	SQHead uint16
	SQID   uint16
	CID    uint16
	Phase  uint8
	Status uint16 // status field without the phase bit: SC | SCT<<8 | CRD<<11 | M<<13 | DNR<<14
}

// DecodeCompletion reads a 16-byte completion entry.
func DecodeCompletion(b []byte) Completion {
	_ = b[cqeSize-1]
	dw2 := binary.LittleEndian.Uint32(b[8:])
	dw3 := binary.LittleEndian.Uint32(b[12:])
	return Completion{
		DW0:    binary.LittleEndian.Uint32(b[0:]),
		SQHead: uint16(dw2),
		SQID:   uint16(dw2 >> 16),
		CID:    uint16(dw3),
		Phase:  uint8(dw3>>16) & 1,
		Status: uint16(dw3 >> 17),
	}
}

// Status code types and the codes this package names.
const (
	SCTGeneric = 0
	SCTCommand = 1
	SCTMedia   = 2

	SCInvalidOpcode     = 0x01
	SCInvalidField      = 0x02
	SCDataTransferError = 0x04
	SCAbortRequested    = 0x07
	SCInvalidPRPOffset  = 0x13
	SCLBAOutOfRange     = 0x80
)

// StatusError is a command that completed with a non-zero NVMe status. It matches
// unix.EIO (unix.ENOSPC for LBA Out of Range), as the kernel maps them.
type StatusError struct {
	Opcode uint8
	SCT    uint8
	SC     uint8
	DNR    bool
}

// statusError returns nil for status 0, else the decoded *StatusError.
func statusError(op uint8, status uint16) error {
	if status&0x7ff == 0 {
		return nil
	}
	return &StatusError{Opcode: op, SCT: uint8(status>>8) & 7, SC: uint8(status), DNR: status&(1<<14) != 0}
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("nvme: opcode %#02x failed: status type %d code %#02x (%s)%s", e.Opcode, e.SCT, e.SC, e.describe(), map[bool]string{true: ", do not retry"}[e.DNR])
}

func (e *StatusError) describe() string {
	if e.SCT == SCTGeneric {
		switch e.SC {
		case SCInvalidOpcode:
			return "invalid opcode"
		case SCInvalidField:
			return "invalid field in command"
		case SCDataTransferError:
			return "data transfer error"
		case SCAbortRequested:
			return "command abort requested"
		case SCInvalidPRPOffset:
			return "PRP offset invalid"
		case SCLBAOutOfRange:
			return "LBA out of range"
		}
	}
	return "see the NVMe base specification"
}

// Unwrap maps the status onto the errno the kernel's driver would report.
func (e *StatusError) Unwrap() error {
	if e.SCT == SCTGeneric && e.SC == SCLBAOutOfRange {
		return unix.ENOSPC
	}
	return unix.EIO
}

// Errors of the data path.
var (
	// ErrControllerFailed reports a controller that set CSTS.CFS, stopped being ready
	// or vanished from the bus; every request in flight fails with it.
	ErrControllerFailed = fmt.Errorf("nvme: controller failed or removed: %w", unix.EIO)
	// ErrTimeout reports a command that neither completed nor was aborted in time.
	ErrTimeout = fmt.Errorf("nvme: command timed out: %w", unix.ETIMEDOUT)
	// ErrGone reports a device that the kernel asked back (vfio-pci unbind).
	ErrGone = fmt.Errorf("nvme: device released on the kernel's request: %w", unix.ENODEV)
)

// TransferTooLargeError reports a queued request above the device's maximum
// transfer size; ReadAt and WriteAt split such requests themselves.
type TransferTooLargeError struct{ Len, Max int }

func (e *TransferTooLargeError) Error() string {
	return fmt.Sprintf("nvme: request of %d bytes exceeds the maximum transfer of %d bytes: split it", e.Len, e.Max)
}

// Unwrap makes the error match unix.EINVAL.
func (e *TransferTooLargeError) Unwrap() error { return unix.EINVAL }

// ControllerInfo is what Identify Controller says about a controller.
type ControllerInfo struct {
	VendorID      uint16
	Serial        string
	Model         string
	Firmware      string
	MDTS          uint8 // maximum data transfer size, a power of two in minimum pages; 0 = no limit
	NN            uint32
	ONCS          uint16
	VolatileCache bool
}

// SupportsDSM and SupportsWriteZeroes read the optional NVM command support field.
func (c *ControllerInfo) SupportsDSM() bool { return c.ONCS&(1<<2) != 0 }

// SupportsWriteZeroes reports ONCS bit 3.
func (c *ControllerInfo) SupportsWriteZeroes() bool { return c.ONCS&(1<<3) != 0 }

// MaxTransfer returns the maximum transfer in bytes for minimum page size minPage,
// bounded by limit.
func (c *ControllerInfo) MaxTransfer(minPage, limit int) int {
	if c.MDTS == 0 || c.MDTS > 20 {
		return limit
	}
	return min(limit, minPage<<c.MDTS)
}

// ParseIdentifyController decodes a 4096-byte Identify Controller structure.
func ParseIdentifyController(b []byte) (ControllerInfo, error) {
	if len(b) < 4096 {
		return ControllerInfo{}, fmt.Errorf("nvme: identify controller data of %d bytes, want 4096", len(b))
	}
	return ControllerInfo{
		VendorID:      binary.LittleEndian.Uint16(b[0:]),
		Serial:        strings.TrimSpace(string(b[4:24])),
		Model:         strings.TrimSpace(string(b[24:64])),
		Firmware:      strings.TrimSpace(string(b[64:72])),
		MDTS:          b[77],
		NN:            binary.LittleEndian.Uint32(b[516:]),
		ONCS:          binary.LittleEndian.Uint16(b[520:]),
		VolatileCache: b[525]&1 != 0,
	}, nil
}

// NamespaceInfo is the geometry Identify Namespace reports.
type NamespaceInfo struct {
	Blocks    uint64 // NSZE
	BlockSize int    // bytes per logical block of the formatted LBA format
	Metadata  int    // metadata bytes per block (must be 0 here)
	OptimalIO int    // preferred write granularity in bytes, 0 when not reported
}

// ParseIdentifyNamespace decodes a 4096-byte Identify Namespace structure.
func ParseIdentifyNamespace(b []byte) (NamespaceInfo, error) {
	if len(b) < 4096 {
		return NamespaceInfo{}, fmt.Errorf("nvme: identify namespace data of %d bytes, want 4096", len(b))
	}
	nsze := binary.LittleEndian.Uint64(b[0:])
	flbas := int(b[26]&0xf) | int(b[26]>>5&3)<<4
	nlbaf := int(b[25]) + 1
	if flbas >= nlbaf || flbas >= 64 {
		return NamespaceInfo{}, fmt.Errorf("nvme: namespace formatted with LBA format %d of %d", flbas, nlbaf)
	}
	lbaf := binary.LittleEndian.Uint32(b[128+4*flbas:])
	lbads := (lbaf >> 16) & 0xff
	if lbads < 9 || lbads > 16 {
		return NamespaceInfo{}, fmt.Errorf("nvme: LBA data size 2^%d is not supported", lbads)
	}
	ni := NamespaceInfo{Blocks: nsze, BlockSize: 1 << lbads, Metadata: int(lbaf & 0xffff)}
	if b[24]&(1<<4) != 0 { // NSFEAT.OPTPERF: NPWG/NOWS are valid
		ni.OptimalIO = (int(binary.LittleEndian.Uint16(b[72:])) + 1) * ni.BlockSize
	}
	if nsze == 0 {
		return ni, errors.New("nvme: namespace has no blocks (inactive?)")
	}
	return ni, nil
}

// PRP describes how to address one transfer: PRP1, PRP2, and the entries of the PRP
// list PRP2 points at when the transfer spans more than two pages.
type PRP struct {
	PRP1, PRP2 uint64
	List       int // entries written to the list
}

// MaxPRPListEntries is how many entries one list page holds; the driver keeps one
// list page per command, so a transfer spans at most 1+MaxPRPListEntries pages.
const MaxPRPListEntries = pageSize / 8

// BuildPRP fills list with the page addresses of a transfer of n bytes starting at
// IOVA iova (whose pages are contiguous in IOVA space) and returns PRP1 and PRP2;
// listIOVA is where list lives in IOVA space. iova must be 4-byte aligned.
func BuildPRP(iova uint64, n int, list []uint64, listIOVA uint64) (PRP, error) {
	if n <= 0 {
		return PRP{}, fmt.Errorf("nvme: PRP for %d bytes", n)
	}
	if iova&3 != 0 {
		return PRP{}, fmt.Errorf("nvme: data IOVA %#x is not dword aligned", iova)
	}
	first := pageSize - int(iova%pageSize)
	p := PRP{PRP1: iova}
	if n <= first {
		return p, nil
	}
	next := iova + uint64(first)
	rest := n - first
	if rest <= pageSize {
		p.PRP2 = next
		return p, nil
	}
	pages := (rest + pageSize - 1) / pageSize
	if pages > len(list) {
		return PRP{}, fmt.Errorf("nvme: transfer of %d bytes needs %d PRP list entries, have %d", n, pages, len(list))
	}
	for i := 0; i < pages; i++ {
		list[i] = next + uint64(i)*pageSize
	}
	p.PRP2 = listIOVA
	p.List = pages
	return p, nil
}

// maxDSMRanges is how many ranges one Dataset Management command carries (NR is 8
// bits, 0-based) and maxDSMBlocks the blocks one range covers (its NLB is 32 bits).
const (
	maxDSMRanges = 256
	maxDSMBlocks = 1<<32 - 1
)

// EncodeDSMRanges writes Dataset Management ranges (16 bytes each: context
// attributes, block count, starting LBA) covering blocks [from, to) into buf, as
// many as fit in one command, and returns how many it wrote and the first block left.
func EncodeDSMRanges(buf []byte, from, to uint64) (n int, next uint64) {
	for from < to && n < maxDSMRanges && (n+1)*16 <= len(buf) {
		nb := min(to-from, maxDSMBlocks)
		r := buf[n*16:]
		binary.LittleEndian.PutUint32(r[0:], 0)
		binary.LittleEndian.PutUint32(r[4:], uint32(nb))
		binary.LittleEndian.PutUint64(r[8:], from)
		from += nb
		n++
	}
	return n, from
}
