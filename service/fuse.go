package service

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/polytropon/polytropon/service/fusegw"
)

// fuseMount is an instance served at a FUSE mountpoint (the legacy path).
type fuseMount struct {
	srv *fusegw.Server
	log *zap.Logger
}

// mountFUSE serves in at mountpoint; a stale mount left there by a killed service
// is cleaned up first (fusegw.Mount does it).
func mountFUSE(m FUSEMount, in *instance, q *Quota, log *zap.Logger) (fuseMount, error) {
	srv, err := fusegw.Mount(m.Path, in.fs, gatewayOptions(m, in, q, log))
	if err != nil {
		return fuseMount{}, err
	}
	log.Info("FUSE mount", zap.String("fs", in.name), zap.String("mountpoint", srv.Mountpoint()))
	return fuseMount{srv: srv, log: log}, nil
}

// gatewayOptions are the gateway's options for mountpoint m of in: its kernel
// caching, the instance's Checker, so that both paths check callers with one
// memo of the instance's directories, and the service's per-uid handle quota,
// which the direct path's handles count against too.
func gatewayOptions(m FUSEMount, in *instance, q *Quota, log *zap.Logger) fusegw.Options {
	o := fusegw.Options{Name: "polytropon:" + in.name, Logger: log, Access: in.acc,
		AttrTimeout: m.AttrTimeout, EntryTimeout: m.EntryTimeout, DirectIO: m.DirectIO, AllowOther: m.AllowOther}
	if q != nil {
		// Not assigned when nil: a nil *Quota in the interface would not
		// read as "unlimited" to the gateway.
		o.Quota = q
	}
	return o
}

// serveFUSE serves in on a FUSE connection the privileged parent mounted
// (hf); askParent asks it to detach the mount, which this process may not.
func serveFUSE(m FUSEMount, hf HandoffFUSE, in *instance, q *Quota, log *zap.Logger, askParent func() error) (fuseMount, error) {
	srv, err := fusegw.ServeConnection(hf.FD, hf.Path, hf.Dev, in.fs, gatewayOptions(m, in, q, log), askParent)
	if err != nil {
		return fuseMount{}, err
	}
	log.Info("FUSE mount (mounted by the parent)", zap.String("fs", in.name), zap.String("mountpoint", srv.Mountpoint()))
	return fuseMount{srv: srv, log: log}, nil
}

// unmountWait bounds how long shutdown waits for the kernel to release a mount
// whose files are still open in other processes (the lazy unmount lets it go
// later; the instance must outlive the last request, so the wait is not skipped
// lightly).
const unmountWait = 10 * time.Second

func (m fuseMount) unmount() error {
	if m.srv == nil {
		return nil
	}
	if err := m.srv.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w", m.srv.Mountpoint(), err)
	}
	select {
	case <-m.srv.Done():
		return nil
	case <-time.After(unmountWait):
		return fmt.Errorf("unmount %s: requests still in flight after %v", m.srv.Mountpoint(), unmountWait)
	}
}
