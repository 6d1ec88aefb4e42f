package nvme

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// passthruCmd mirrors struct nvme_passthru_cmd (ioctls) and struct nvme_uring_cmd
// (io_uring, where Result is reserved): 72 bytes, include/uapi/linux/nvme_ioctl.h.
type passthruCmd struct {
	Opcode      uint8
	Flags       uint8
	Rsvd1       uint16
	NSID        uint32
	CDW2        uint32
	CDW3        uint32
	Metadata    uint64
	Addr        uint64
	MetadataLen uint32
	DataLen     uint32
	CDW10       uint32
	CDW11       uint32
	CDW12       uint32
	CDW13       uint32
	CDW14       uint32
	CDW15       uint32
	TimeoutMs   uint32
	Result      uint32
}

const passthruCmdSize = 72

var _ [passthruCmdSize - unsafe.Sizeof(passthruCmd{})]struct{}
var _ [unsafe.Sizeof(passthruCmd{}) - passthruCmdSize]struct{}

const (
	ioctlID       = 0x4E40     // _IO('N', 0x40)
	ioctlAdminCmd = 0xC0484E41 // _IOWR('N', 0x41, struct nvme_admin_cmd)
	ioctlIOCmd    = 0xC0484E43 // _IOWR('N', 0x43, struct nvme_passthru_cmd)
	uringCmdIO    = 0xC0484E80 // _IOWR('N', 0x80, struct nvme_uring_cmd)
)

// ioctlCmd runs one passthrough ioctl; a positive return is an NVMe status.
func ioctlCmd(fd uintptr, req uintptr, c *passthruCmd) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(c)))
	if e != 0 {
		return 0, e
	}
	return r, nil
}

func ioctlNSID(fd uintptr) (uint32, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, fd, ioctlID, 0)
	if e != 0 {
		return 0, e
	}
	return uint32(r), nil
}

// bufAddr is the address of b's first byte (0 when empty).
func bufAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

// putCmd copies c into an SQE's 80-byte URING_CMD area.
func putCmd(area []byte, c *passthruCmd) {
	copy(area[:passthruCmdSize], unsafe.Slice((*byte)(unsafe.Pointer(c)), passthruCmdSize))
}
