package shm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// HugePageSize is the huge page size Create rounds to when it tries MFD_HUGETLB.
const HugePageSize = 2 << 20

// RequiredSeals are the seals every Region's memfd carries.
const RequiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL

// MaxSize bounds a region: a shared region is a fixed, configured resource, and a
// size above this is a configuration error rather than a request to honour.
const MaxSize = 1 << 36

// ErrNotSealed is returned by Open for an fd whose size is not sealed.
var ErrNotSealed = errors.New("shm: memfd is not sealed against resizing")

// Region is one memfd mapped MAP_SHARED into this process.
type Region struct {
	fd   int
	mem  []byte
	huge bool
}

// Options for Create.
type Options struct {
	// HugePages asks for MFD_HUGETLB pages (size rounded up to HugePageSize); when
	// they are not available Create falls back to ordinary pages with
	// madvise(MADV_HUGEPAGE).
	HugePages bool
	// ReadOnlyPeers seals the memfd with F_SEAL_FUTURE_WRITE once Create has
	// mapped it: Create's own mapping stays writable, every other one (a peer's
	// that received the fd, or one reopened through /proc) can only be PROT_READ,
	// cannot be made writable with mprotect, and write(2) to the fd fails. For
	// state one process publishes to many that must not be able to change it.
	ReadOnlyPeers bool
}

// ReadOnlySeals are the seals of a region created with ReadOnlyPeers.
const ReadOnlySeals = RequiredSeals | unix.F_SEAL_FUTURE_WRITE

// Create makes a sealed memfd of size bytes (rounded up to the page size) and maps it.
// name appears in /proc/PID/fd and maps for debugging.
func Create(name string, size int, opts Options) (*Region, error) {
	if size <= 0 || size > MaxSize {
		return nil, fmt.Errorf("shm: region size %d out of range (1..%d)", size, MaxSize)
	}
	if opts.HugePages && !opts.ReadOnlyPeers {
		r, err := create(name, roundUp(size, HugePageSize), unix.MFD_HUGETLB, false)
		if err == nil {
			r.huge = true
			return r, nil
		}
		// Fall through: an empty hugetlb pool (ENOMEM at mmap) or a kernel without
		// hugetlbfs (EINVAL at memfd_create) is ordinary, not an error.
	}
	r, err := create(name, roundUp(size, os.Getpagesize()), 0, opts.ReadOnlyPeers)
	if err != nil {
		return nil, err
	}
	if len(r.mem) >= HugePageSize {
		// Only a hint: shmem THP may be disabled (shmem_enabled=never).
		_ = unix.Madvise(r.mem, unix.MADV_HUGEPAGE)
	}
	return r, nil
}

func create(name string, size, extra int, readOnlyPeers bool) (*Region, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|extra)
	if err != nil {
		return nil, fmt.Errorf("shm: memfd_create %q: %w", name, err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: ftruncate %q to %d: %w", name, size, err)
	}
	// F_SEAL_SEAL last: a read-only-for-peers region gets F_SEAL_FUTURE_WRITE
	// after its one writable mapping exists (the seal refuses later ones).
	seals := RequiredSeals
	if readOnlyPeers {
		seals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: seal %q: %w", name, err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: mmap %q (%d bytes): %w", name, size, err)
	}
	if readOnlyPeers {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE|unix.F_SEAL_SEAL); err != nil {
			unix.Munmap(mem)
			unix.Close(fd)
			return nil, fmt.Errorf("shm: seal %q against writes: %w", name, err)
		}
	}
	return &Region{fd: fd, mem: mem}, nil
}

// Open maps a region received from a peer, readable and writable. It takes ownership
// of fd (closed by Close, or at once on error). The fd must carry RequiredSeals.
func Open(fd int) (*Region, error) { return open(fd, unix.PROT_READ|unix.PROT_WRITE) }

// OpenReadOnly maps a region received from a peer for reading only (a region the
// peer created with ReadOnlyPeers cannot be mapped otherwise). Like Open, it takes
// ownership of fd and requires RequiredSeals.
func OpenReadOnly(fd int) (*Region, error) { return open(fd, unix.PROT_READ) }

func open(fd, prot int) (*Region, error) {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: F_GET_SEALS: %w", err)
	}
	if seals&RequiredSeals != RequiredSeals {
		unix.Close(fd)
		return nil, fmt.Errorf("%w (seals %#x)", ErrNotSealed, seals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: fstat: %w", err)
	}
	if st.Size <= 0 || st.Size > MaxSize {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: received region size %d out of range", st.Size)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), prot, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: mmap received region (%d bytes): %w", st.Size, err)
	}
	// Huge pages show as a larger block size on hugetlbfs.
	return &Region{fd: fd, mem: mem, huge: st.Blksize >= HugePageSize}, nil
}

// Bytes returns the mapping. It is valid until Close.
func (r *Region) Bytes() []byte { return r.mem }

// Size returns the mapping's length in bytes.
func (r *Region) Size() int { return len(r.mem) }

// Fd returns the memfd, for passing to a peer. It stays owned by the Region.
func (r *Region) Fd() int { return r.fd }

// DropFd closes the memfd but keeps the mapping (Close then only unmaps): a
// process that has passed the fd on and maps the region for good need not spend a
// file descriptor on it. Fd returns -1 afterwards.
func (r *Region) DropFd() error {
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	if err != nil {
		return fmt.Errorf("shm: close memfd: %w", err)
	}
	return nil
}

// Huge reports whether the region is backed by hugetlb pages.
func (r *Region) Huge() bool { return r.huge }

// Close unmaps the region and closes its memfd. The memory itself lives on while a
// peer still maps it. Close is idempotent.
func (r *Region) Close() error {
	var errs []error
	if r.mem != nil {
		if err := unix.Munmap(r.mem); err != nil {
			errs = append(errs, fmt.Errorf("shm: munmap: %w", err))
		}
		r.mem = nil
	}
	if r.fd >= 0 {
		if err := unix.Close(r.fd); err != nil {
			errs = append(errs, fmt.Errorf("shm: close memfd: %w", err))
		}
		r.fd = -1
	}
	return errors.Join(errs...)
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }
