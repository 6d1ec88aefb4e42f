package uring

func (s *SQE) prepRW(op Op, fd int32, addr uint64, n uint32, off uint64, userData uint64) {
	*s = SQE{Opcode: op, Fd: fd, Addr: addr, Len: n, Off: off, UserData: userData}
}

// PrepNop prepares a no-op; its completion has Res 0.
func (s *SQE) PrepNop(userData uint64) { s.prepRW(OpNop, -1, 0, 0, 0, userData) }

// PrepFsync flushes fd; flags FsyncDatasync makes it fdatasync.
func (s *SQE) PrepFsync(fd int32, flags uint32, userData uint64) {
	s.prepRW(OpFsync, fd, 0, 0, 0, userData)
	s.OpFlags = flags
}

// PrepClose closes fd.
func (s *SQE) PrepClose(fd int32, userData uint64) { s.prepRW(OpClose, fd, 0, 0, 0, userData) }

// PrepFallocate allocates (mode as fallocate(2)) length bytes at off.
func (s *SQE) PrepFallocate(fd int32, mode uint32, off, length int64, userData uint64) {
	s.prepRW(OpFallocate, fd, uint64(length), mode, uint64(off), userData)
}

// PrepURingCmd prepares IORING_OP_URING_CMD with command cmdOp (for NVMe passthrough
// NVME_URING_CMD_IO); fill the command with Ring.Cmd(s) afterwards.
func (s *SQE) PrepURingCmd(fd int32, cmdOp uint32, userData uint64) {
	s.prepRW(OpURingCmd, fd, 0, 0, uint64(cmdOp), userData)
}

// UseFixedFile marks the entry's Fd as an index into the registered files.
func (s *SQE) UseFixedFile() { s.Flags |= SQEFixedFile }
