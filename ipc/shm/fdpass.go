package shm

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// MaxFds bounds how many descriptors one message may carry.
const MaxFds = 8

// ErrTruncated is returned when a received message or its control data was cut short.
var ErrTruncated = errors.New("shm: message or its fds truncated")

// SendFds sends msg with fds attached (SCM_RIGHTS) as one message. The fds stay owned
// by the caller; the peer receives duplicates.
func SendFds(c *net.UnixConn, msg []byte, fds ...int) error {
	if len(fds) > MaxFds {
		return fmt.Errorf("shm: %d fds in one message, at most %d", len(fds), MaxFds)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(msg, oob, nil)
	if err != nil {
		return fmt.Errorf("shm: sendmsg: %w", err)
	}
	if n != len(msg) || oobn != len(oob) {
		return ErrTruncated
	}
	return nil
}

// RecvFds receives one message into msg and returns its length and the fds that came
// with it (owned by the caller from then on). At most MaxFds are accepted; a message
// that carried more is an error and every fd that did arrive is closed.
func RecvFds(c *net.UnixConn, msg []byte) (int, []int, error) {
	oob := make([]byte, unix.CmsgSpace(MaxFds*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(msg, oob)
	if err != nil {
		return 0, nil, fmt.Errorf("shm: recvmsg: %w", err)
	}
	fds, perr := parseRights(oob[:oobn])
	if perr != nil || flags&(unix.MSG_CTRUNC|unix.MSG_TRUNC) != 0 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		if perr != nil {
			return 0, nil, perr
		}
		return 0, nil, ErrTruncated
	}
	return n, fds, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("shm: parse control message: %w", err)
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			// Not SCM_RIGHTS (e.g. credentials): not ours to keep.
			continue
		}
		fds = append(fds, got...)
	}
	return fds, nil
}
