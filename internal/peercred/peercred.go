// Package peercred reads a caller's credentials from the kernel: the uid, gid and
// supplementary groups a Unix socket peer had when it connected (SO_PEERCRED,
// SO_PEERGROUPS), and the effective capabilities of a process (/proc/PID/status),
// cross-checked so that a recycled PID or a process that changed its identity never
// lends its capabilities to another.
//
// It is what the direct path's handshake (ipc/back) and the FUSE gateway (a
// request header's pid) use to learn who is asking; the rules applied to those
// credentials live in libservices/access. Nothing here trusts bytes a client wrote.
//
// # Contract
//
//   - FromSocket returns the identity fixed at connect(2) (the connecting thread's
//     effective uid and gid, and its supplementary groups), and the capabilities
//     of the peer process now, but only when /proc shows that process with the same
//     effective and filesystem uid and gid, and a pidfd taken before /proc was read
//     still names a live process afterwards. Otherwise Caps is 0: an unknown
//     capability set counts as none.
//   - FromPID does the same for a pid and the uid and gid the kernel reported with
//     it (a FUSE request header, whose pid is the calling thread's id), without a
//     pidfd from a socket: it opens one itself (PidfdOpen: a thread's too) before
//     reading /proc, so a process that exited in between is not mistaken for the
//     one that asked.
//
// Measure: `go test -bench . ./internal/peercred` (a handshake reads one socket
// option set and one /proc file; nothing here is on a per-request path).
package peercred

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Cred is a caller's identity as the kernel reports it.
type Cred struct {
	PID    int32    // in the reader's PID namespace; 0 when unknown
	UID    uint32   // effective uid at connect (fsuid for a FUSE request)
	GID    uint32   // effective gid at connect (fsgid for a FUSE request)
	Groups []uint32 // supplementary groups; never shared with another Cred
	// Caps is the effective capability set (bit n is capability n, as in
	// linux/capability.h), or 0 when it could not be read reliably.
	Caps uint64
}

// Capability numbers used by the permission rules (linux/capability.h).
const (
	CapChown          = 0
	CapDacOverride    = 1
	CapDacReadSearch  = 2
	CapFowner         = 3
	CapFsetid         = 4
	CapKill           = 5
	CapLinuxImmutable = 9
	CapSysAdmin       = 21
	CapMknod          = 27
	CapSetfcap        = 31
)

// Has reports whether c's effective capability set holds capability n.
func (c *Cred) Has(n int) bool { return n >= 0 && n < 64 && c.Caps&(1<<uint(n)) != 0 }

// FromSocket returns the credentials of the peer of the connected Unix socket fd.
func FromSocket(fd int) (Cred, error) {
	uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return Cred{}, fmt.Errorf("peercred: SO_PEERCRED: %w", err)
	}
	c := Cred{PID: uc.Pid, UID: uc.Uid, GID: uc.Gid}
	if c.Groups, err = peerGroups(fd); err != nil {
		return Cred{}, err
	}
	if c.PID <= 0 {
		return c, nil
	}
	pidfd, err := peerPidfd(fd)
	if err != nil {
		// Kernels before 6.5 have no SO_PEERPIDFD: open one by pid, which
		// is as good as long as the peer is still connected (a connected
		// peer's pid cannot be recycled while the process lives).
		pidfd, err = unix.PidfdOpen(int(c.PID), 0)
		if err != nil {
			return c, nil
		}
	}
	defer unix.Close(pidfd)
	c.Caps = capsIfSame(pidfd, c.PID, c.UID, c.GID)
	return c, nil
}

// FromPID returns the credentials of process pid, which the kernel reported as
// asking with fsuid uid and fsgid gid: its supplementary groups and capabilities
// from /proc, if /proc shows that process with that identity. When it does not
// (the process exited, or changed its identity since), Groups is empty and Caps
// is 0: the caller is treated as uid and gid alone.
func FromPID(pid int32, uid, gid uint32) Cred {
	c := Cred{PID: pid, UID: uid, GID: gid}
	if pid <= 0 {
		return c
	}
	pidfd, err := PidfdOpen(pid)
	if err != nil {
		return c
	}
	defer unix.Close(pidfd)
	st, err := readStatus(pid)
	if err != nil || !st.same(uid, gid) || !alive(pidfd) {
		return c
	}
	c.Groups, c.Caps = st.groups, st.capEff
	return c
}

// pidfdThread is PIDFD_THREAD (Linux 6.9): a pidfd for a thread that is not
// its process's leader.
const pidfdThread = unix.O_EXCL

// PidfdOpen opens a pidfd for pid, which may be a thread id: the kernel puts
// the calling thread's id in a FUSE request header, and /proc/TID/status shows
// that thread's own credentials.
func PidfdOpen(pid int32) (int, error) {
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err == unix.ENOENT || err == unix.EINVAL { // not a leader (6.18 says ENOENT, older kernels EINVAL)
		fd, err = unix.PidfdOpen(int(pid), pidfdThread)
	}
	return fd, err
}

// Alive reports whether pidfd still names a running process or thread.
func Alive(pidfd int) bool { return alive(pidfd) }

func capsIfSame(pidfd int, pid int32, uid, gid uint32) uint64 {
	st, err := readStatus(pid)
	if err != nil || !st.same(uid, gid) || !alive(pidfd) {
		return 0
	}
	return st.capEff
}

// alive reports whether pidfd still names a running process: read after /proc,
// it proves the status came from that process and not from one that took its
// pid after it exited.
//
// A reader may not be allowed to signal the process (a service running as a
// tenant's uid asking about a root caller): EPERM still proves that the pidfd's
// process exists, and only ESRCH says it is gone.
func alive(pidfd int) bool {
	err := unix.PidfdSendSignal(pidfd, 0, nil, 0)
	return err == nil || err == unix.EPERM
}

// status is what /proc/PID/status says of a process's identity.
type status struct {
	uids, gids [4]uint32 // real, effective, saved, filesystem
	groups     []uint32
	capEff     uint64
}

// same reports whether the process acts with effective and filesystem uid and
// gid equal to uid and gid.
func (s *status) same(uid, gid uint32) bool {
	return s.uids[1] == uid && s.uids[3] == uid && s.gids[1] == gid && s.gids[3] == gid
}

var errStatus = errors.New("peercred: malformed /proc status")

func readStatus(pid int32) (*status, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil, err
	}
	return parseStatus(data)
}

func parseStatus(data []byte) (*status, error) {
	var s status
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		fields := bytes.Fields(val)
		switch string(key) {
		case "Uid", "Gid":
			if len(fields) != 4 {
				return nil, errStatus
			}
			dst := &s.uids
			if string(key) == "Gid" {
				dst = &s.gids
			}
			for i, f := range fields {
				v, err := strconv.ParseUint(string(f), 10, 32)
				if err != nil {
					return nil, errStatus
				}
				dst[i] = uint32(v)
			}
			if string(key) == "Uid" {
				seen |= 1
			} else {
				seen |= 2
			}
		case "Groups":
			s.groups = make([]uint32, 0, len(fields))
			for _, f := range fields {
				v, err := strconv.ParseUint(string(f), 10, 32)
				if err != nil {
					return nil, errStatus
				}
				s.groups = append(s.groups, uint32(v))
			}
			seen |= 4
		case "CapEff":
			if len(fields) != 1 {
				return nil, errStatus
			}
			v, err := strconv.ParseUint(string(fields[0]), 16, 64)
			if err != nil {
				return nil, errStatus
			}
			s.capEff = v
			seen |= 8
		}
	}
	if seen != 15 {
		return nil, errStatus
	}
	return &s, nil
}
