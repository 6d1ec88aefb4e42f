package nvme

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// include/uapi/linux/vfio.h: VFIO_TYPE ';' (0x3b), VFIO_BASE 100.
const (
	vfioGetAPIVersion       = 0x3B64
	vfioCheckExtension      = 0x3B65
	vfioSetIOMMU            = 0x3B66
	vfioGroupGetStatus      = 0x3B67
	vfioGroupSetContainer   = 0x3B68
	vfioGroupGetDeviceFD    = 0x3B6A
	vfioDeviceGetRegionInfo = 0x3B6C
	vfioDeviceGetIRQInfo    = 0x3B6D
	vfioDeviceSetIRQs       = 0x3B6E
	vfioIOMMUMapDMA         = 0x3B71
	vfioIOMMUUnmapDMA       = 0x3B72

	vfioAPIVersion   = 0
	vfioType1v2IOMMU = 3

	vfioGroupFlagsViable = 1
	vfioPCIBAR0Region    = 0
	vfioPCIConfigRegion  = 7
	vfioPCIMSIXIRQIndex  = 2
	vfioPCIReqIRQIndex   = 4

	vfioIRQSetDataNone      = 1 << 0
	vfioIRQSetDataEventfd   = 1 << 2
	vfioIRQSetActionTrigger = 1 << 5
	vfioRegionInfoFlagMmap  = 1 << 2
	vfioDMAMapFlagRead      = 1 << 0
	vfioDMAMapFlagWrite     = 1 << 1
)

type vfioGroupStatus struct{ Argsz, Flags uint32 }

type vfioRegionInfo struct {
	Argsz, Flags, Index, CapOffset uint32
	Size, Offset                   uint64
}

type vfioIRQInfo struct{ Argsz, Flags, Index, Count uint32 }

type vfioDMAMap struct {
	Argsz, Flags      uint32
	Vaddr, Iova, Size uint64
}

type vfioDMAUnmap struct {
	Argsz, Flags uint32
	Iova, Size   uint64
}

func ioctlPtr(fd int, req uintptr, p unsafe.Pointer) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
	if e != 0 {
		return r, e
	}
	return r, nil
}

func ioctlVal(fd int, req, v uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, v)
	if e != 0 {
		return r, e
	}
	return r, nil
}

func vfioGroupViable(gfd int) (bool, error) {
	gs := vfioGroupStatus{Argsz: uint32(unsafe.Sizeof(vfioGroupStatus{}))}
	if _, err := ioctlPtr(gfd, vfioGroupGetStatus, unsafe.Pointer(&gs)); err != nil {
		return false, err
	}
	return gs.Flags&vfioGroupFlagsViable != 0, nil
}

func vfioSetContainer(gfd, cfd int) error {
	c := int32(cfd)
	_, err := ioctlPtr(gfd, vfioGroupSetContainer, unsafe.Pointer(&c))
	return err
}

func vfioDeviceFD(gfd int, name string) (int, error) {
	b := append([]byte(name), 0)
	r, err := ioctlPtr(gfd, vfioGroupGetDeviceFD, unsafe.Pointer(&b[0]))
	return int(r), err
}

func vfioRegion(dfd int, index uint32) (vfioRegionInfo, error) {
	ri := vfioRegionInfo{Argsz: uint32(unsafe.Sizeof(vfioRegionInfo{})), Index: index}
	_, err := ioctlPtr(dfd, vfioDeviceGetRegionInfo, unsafe.Pointer(&ri))
	return ri, err
}

func vfioIRQCount(dfd int, index uint32) (int, error) {
	ii := vfioIRQInfo{Argsz: uint32(unsafe.Sizeof(vfioIRQInfo{})), Index: index}
	_, err := ioctlPtr(dfd, vfioDeviceGetIRQInfo, unsafe.Pointer(&ii))
	return int(ii.Count), err
}

// vfioSetEventfds routes interrupts start..start+len(fds)-1 of index to eventfds; an
// empty fds disables the index.
func vfioSetEventfds(dfd int, index uint32, fds []int) error {
	buf := make([]byte, 20+4*len(fds))
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(buf)))
	flags := uint32(vfioIRQSetDataEventfd | vfioIRQSetActionTrigger)
	if len(fds) == 0 {
		flags = vfioIRQSetDataNone | vfioIRQSetActionTrigger
	}
	binary.LittleEndian.PutUint32(buf[4:], flags)
	binary.LittleEndian.PutUint32(buf[8:], index)
	binary.LittleEndian.PutUint32(buf[12:], 0)
	binary.LittleEndian.PutUint32(buf[16:], uint32(len(fds)))
	for i, fd := range fds {
		binary.LittleEndian.PutUint32(buf[20+4*i:], uint32(int32(fd)))
	}
	_, err := ioctlPtr(dfd, vfioDeviceSetIRQs, unsafe.Pointer(&buf[0]))
	return err
}

func vfioMapDMA(cfd int, mem []byte, iova uint64) error {
	m := vfioDMAMap{Argsz: uint32(unsafe.Sizeof(vfioDMAMap{})), Flags: vfioDMAMapFlagRead | vfioDMAMapFlagWrite,
		Vaddr: uint64(uintptr(unsafe.Pointer(&mem[0]))), Iova: iova, Size: uint64(len(mem))}
	if _, err := ioctlPtr(cfd, vfioIOMMUMapDMA, unsafe.Pointer(&m)); err != nil {
		return fmt.Errorf("nvme: VFIO_IOMMU_MAP_DMA %d bytes at IOVA %#x: %w", len(mem), iova, err)
	}
	return nil
}

func vfioUnmapDMA(cfd int, iova uint64, size int) error {
	u := vfioDMAUnmap{Argsz: uint32(unsafe.Sizeof(vfioDMAUnmap{})), Iova: iova, Size: uint64(size)}
	_, err := ioctlPtr(cfd, vfioIOMMUUnmapDMA, unsafe.Pointer(&u))
	return err
}

// reg is one 32-bit controller register or doorbell in the mapped BAR0. Loads and
// stores are atomic so the compiler neither caches nor splits them: each is exactly
// one MMIO access.
type reg struct{ p *uint32 }

func barReg(bar []byte, off int) reg { return reg{(*uint32)(unsafe.Pointer(&bar[off]))} }

func (r reg) load() uint32   { return atomic.LoadUint32(r.p) }
func (r reg) store(v uint32) { atomic.StoreUint32(r.p, v) }

// cqStatus returns the completion entry's fourth dword (cid, phase, status), read
// atomically because the controller writes it by DMA.
func cqStatus(cq []byte, i int) uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&cq[i*cqeSize+12])))
}

// u64s views DMA memory as PRP list entries (little endian, as the CPU is on amd64
// and arm64).
func u64s(b []byte) []uint64 {
	return unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), len(b)/8)
}

func memAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// pageSpan returns the whole pages that hold b: their first address and length.
func pageSpan(b []byte) (uintptr, int) {
	base := memAddr(b)
	pb := base &^ (pageSize - 1)
	return pb, roundPage(int(base-pb) + len(b))
}

// vfioMapDMAPages maps the whole pages holding b (see pageSpan) at iova.
func vfioMapDMAPages(cfd int, b []byte, iova uint64) error {
	p := unsafe.Pointer(unsafe.SliceData(b))
	off := int(uintptr(p) & (pageSize - 1))
	_, size := pageSpan(b)
	return vfioMapDMA(cfd, unsafe.Slice((*byte)(unsafe.Add(p, -off)), size), iova)
}
