package uring

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

func setup(entries uint32, p *params) (int, unix.Errno) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	return int(fd), errno
}

// enter is io_uring_enter; a nil error means the call succeeded.
func (r *Ring) enter(toSubmit, minComplete, flags uint32) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if errno != 0 {
		return int(n), errno
	}
	return int(n), nil
}

func (r *Ring) register(op uint32, arg unsafe.Pointer, nr uint32) error {
	if r.closed {
		return ErrClosed
	}
	for i := 0; ; i++ {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), uintptr(op), uintptr(arg), uintptr(nr), 0, 0)
		if errno == 0 {
			return nil
		}
		if errno == unix.EINTR && i < r.maxRetries {
			continue
		}
		return errno
	}
}

func (r *Ring) mapRings(p *params) error {
	cqeSize := uintptr(16)
	if r.cqe32 {
		cqeSize = 32
	}
	sqeSize := uintptr(64)
	if r.sqe128 {
		sqeSize = 128
	}
	sqSize := uintptr(p.sqOff.array) + uintptr(p.sqEntries)*4
	cqSize := uintptr(p.cqOff.cqes) + uintptr(p.cqEntries)*cqeSize
	size := max(sqSize, cqSize)
	mem, err := unix.Mmap(r.fd, offSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: mmap rings (%d bytes): %w", size, err)
	}
	sqeMem, err := unix.Mmap(r.fd, offSQEs, int(uintptr(p.sqEntries)*sqeSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Munmap(mem)
		return fmt.Errorf("uring: mmap SQEs: %w", err)
	}
	r.ringMem, r.sqeMem = mem, sqeMem
	base := unsafe.Pointer(&mem[0])
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqHead = at(p.sqOff.head)
	r.sqTail = at(p.sqOff.tail)
	r.sqFlags = at(p.sqOff.flags)
	r.sqMask = *at(p.sqOff.ringMask)
	r.sqEntries = *at(p.sqOff.ringEntries)
	array := unsafe.Slice(at(p.sqOff.array), r.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.cqHead = at(p.cqOff.head)
	r.cqTail = at(p.cqOff.tail)
	r.cqOverflow = at(p.cqOff.overflow)
	r.cqMask = *at(p.cqOff.ringMask)
	r.cqEntries = *at(p.cqOff.ringEntries)
	r.cqes = unsafe.Slice((*rawCQE)(unsafe.Add(base, p.cqOff.cqes)), uintptr(r.cqEntries)*cqeSize/16)
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&sqeMem[0])), uintptr(r.sqEntries)*sqeSize/64)
	r.sqeTail = *r.sqTail
	return nil
}

func (r *Ring) unmap() {
	r.sqes, r.cqes = nil, nil
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.ringMem != nil {
		unix.Munmap(r.ringMem)
		r.ringMem = nil
	}
}

// Overflowed returns the kernel's count of completions it had to drop (only
// kernels without IORING_FEAT_NODROP drop any).
func (r *Ring) Overflowed() uint32 { return *r.cqOverflow }

// Cmd returns the URING_CMD command area of s, which must come from this ring's
// GetSQE: 16 bytes, or 80 on a SetupSQE128 ring.
func (r *Ring) Cmd(s *SQE) []byte {
	n := 16
	if r.sqe128 {
		n = 80
	}
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(s), 48)), n)
}

// RegisterBuffers registers bufs for PrepReadFixed/PrepWriteFixed; buffer i is
// registered index i. The memory must stay mapped until UnregisterBuffers or Close.
func (r *Ring) RegisterBuffers(bufs [][]byte) error {
	if len(bufs) == 0 {
		return errors.New("uring: RegisterBuffers with no buffers")
	}
	iov := make([]unix.Iovec, len(bufs))
	for i, b := range bufs {
		if len(b) == 0 {
			return fmt.Errorf("uring: RegisterBuffers: buffer %d is empty", i)
		}
		iov[i].Base = &b[0]
		iov[i].SetLen(len(b))
	}
	if err := r.register(registerBuffers, unsafe.Pointer(&iov[0]), uint32(len(iov))); err != nil {
		return fmt.Errorf("uring: register %d buffers: %w", len(bufs), err)
	}
	return nil
}

// UnregisterBuffers drops the registered buffers.
func (r *Ring) UnregisterBuffers() error {
	if err := r.register(unregisterBuffers, nil, 0); err != nil {
		return fmt.Errorf("uring: unregister buffers: %w", err)
	}
	return nil
}

// RegisterFiles registers fds; use index i with SQEFixedFile. The ring keeps its own
// reference to each file, so closing an fd afterwards does not affect the ring.
func (r *Ring) RegisterFiles(fds []int32) error {
	if len(fds) == 0 {
		return errors.New("uring: RegisterFiles with no files")
	}
	if err := r.register(registerFiles, unsafe.Pointer(&fds[0]), uint32(len(fds))); err != nil {
		return fmt.Errorf("uring: register %d files: %w", len(fds), err)
	}
	return nil
}

// UnregisterFiles drops the registered files.
func (r *Ring) UnregisterFiles() error {
	if err := r.register(unregisterFiles, nil, 0); err != nil {
		return fmt.Errorf("uring: unregister files: %w", err)
	}
	return nil
}

func addrOf(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}

// PrepRead prepares a read of len(buf) bytes at off (IORING_OP_READ).
func (s *SQE) PrepRead(fd int32, buf []byte, off int64, userData uint64) {
	s.prepRW(OpRead, fd, addrOf(buf), uint32(len(buf)), uint64(off), userData)
}

// PrepWrite prepares a write of buf at off (IORING_OP_WRITE).
func (s *SQE) PrepWrite(fd int32, buf []byte, off int64, userData uint64) {
	s.prepRW(OpWrite, fd, addrOf(buf), uint32(len(buf)), uint64(off), userData)
}

// PrepReadFixed reads into buf, which lies inside registered buffer bufIndex.
func (s *SQE) PrepReadFixed(fd int32, buf []byte, off int64, bufIndex uint16, userData uint64) {
	s.prepRW(OpReadFixed, fd, addrOf(buf), uint32(len(buf)), uint64(off), userData)
	s.BufIndex = bufIndex
}

// PrepWriteFixed writes buf, which lies inside registered buffer bufIndex.
func (s *SQE) PrepWriteFixed(fd int32, buf []byte, off int64, bufIndex uint16, userData uint64) {
	s.prepRW(OpWriteFixed, fd, addrOf(buf), uint32(len(buf)), uint64(off), userData)
	s.BufIndex = bufIndex
}

// PrepReadv reads into iovs at off; iovs must stay reachable until submitted.
func (s *SQE) PrepReadv(fd int32, iovs []unix.Iovec, off int64, userData uint64) {
	s.prepRW(OpReadv, fd, iovAddr(iovs), uint32(len(iovs)), uint64(off), userData)
}

// PrepWritev writes iovs at off.
func (s *SQE) PrepWritev(fd int32, iovs []unix.Iovec, off int64, userData uint64) {
	s.prepRW(OpWritev, fd, iovAddr(iovs), uint32(len(iovs)), uint64(off), userData)
}

func iovAddr(iovs []unix.Iovec) uint64 {
	if len(iovs) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&iovs[0])))
}

// PrepOpenat opens path (NUL-terminated, e.g. from unix.BytePtrFromString) relative
// to dirfd; the completion's Res is the new fd.
func (s *SQE) PrepOpenat(dirfd int32, path *byte, flags int, mode uint32, userData uint64) {
	s.prepRW(OpOpenat, dirfd, uint64(uintptr(unsafe.Pointer(path))), mode, 0, userData)
	s.OpFlags = uint32(flags)
}

// PrepStatx fills stx for path relative to dirfd.
func (s *SQE) PrepStatx(dirfd int32, path *byte, flags int, mask uint32, stx *unix.Statx_t, userData uint64) {
	s.prepRW(OpStatx, dirfd, uint64(uintptr(unsafe.Pointer(path))), mask, uint64(uintptr(unsafe.Pointer(stx))), userData)
	s.OpFlags = uint32(flags)
}

// PrepSend sends buf on a socket.
func (s *SQE) PrepSend(fd int32, buf []byte, msgFlags int, userData uint64) {
	s.prepRW(OpSend, fd, addrOf(buf), uint32(len(buf)), 0, userData)
	s.OpFlags = uint32(msgFlags)
}

// PrepRecv receives into buf from a socket.
func (s *SQE) PrepRecv(fd int32, buf []byte, msgFlags int, userData uint64) {
	s.prepRW(OpRecv, fd, addrOf(buf), uint32(len(buf)), 0, userData)
	s.OpFlags = uint32(msgFlags)
}

// PrepAccept accepts a connection; addr and addrLen may be nil. Res is the new fd.
func (s *SQE) PrepAccept(fd int32, addr *unix.RawSockaddrAny, addrLen *uint32, flags int, userData uint64) {
	s.prepRW(OpAccept, fd, uint64(uintptr(unsafe.Pointer(addr))), 0, uint64(uintptr(unsafe.Pointer(addrLen))), userData)
	s.OpFlags = uint32(flags)
}

// PrepConnect connects a socket to the raw address addr of addrLen bytes.
func (s *SQE) PrepConnect(fd int32, addr unsafe.Pointer, addrLen uint32, userData uint64) {
	s.prepRW(OpConnect, fd, uint64(uintptr(addr)), 0, uint64(addrLen), userData)
}

func (r *Ring) registerProbe(b *probeBuf) error {
	return r.register(registerProbe, unsafe.Pointer(b), uint32(len(b.ops)))
}
