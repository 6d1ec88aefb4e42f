// Package rbd is a RADOS block device image (librbd through go-ceph v0.34.0) as a
// blockdev.Device: create, open, resize, synchronous and queued I/O, so that a
// local filesystem can sit on a network volume under the shared block cache.
//
// It builds only with `-tags ceph,pacific`; without them Open, Create, Resize and
// Remove return ErrNotBuilt, so the project builds with no Ceph libraries.
//
// Asynchronous I/O: go-ceph v0.34.0 does not wrap librbd's rbd_aio_* calls, so a
// Queue of depth D runs D goroutines, each taking one request at a time and making
// the synchronous librbd call, which sends the I/O and waits for it in librbd's
// own threads; completions come back on a channel that Poll reads. D requests are
// therefore in flight at the cluster at once, at the price of one (mostly
// sleeping) OS thread per in-flight request in cgo, a channel send per
// submission and one per completion, and no allocation per request.
//
// Geometry: BlockSize is 512 (librbd takes any offset, 512 keeps the contract's
// alignment checks meaningful), OptimalIOSize 64 KiB, Size the image size rounded
// down to a block and fixed at Open: Resize works on an image that is not open
// here, and the next Open sees the new size.
//
// Faults: a cluster that cannot be reached fails Open within ConnectTimeout with
// an error naming the monitor addresses. While open, librados resends operations
// across OSD and monitor restarts; Flush returns once the OSDs hold every
// completed write, so a flushed write survives an OSD restart
// (TestOSDRestartKeepsFlushedData).
//
// Lock order: Device.mu (an RWMutex: every operation holds it shared, Close
// exclusively, so Close waits for calls in progress and nothing touches a closed
// image), taken alone. A Queue has no lock: one owner, channels to its workers.
//
// Measure: nothing measures it yet beyond its tests, which `make ceph-test`
// runs against a one-node cluster (`go test -tags ceph,pacific ./blockdev/rbd`).
package rbd

import (
	"errors"
	"time"
)

// Options name an image and how to reach it.
type Options struct {
	Conf     string // ceph.conf, required
	ClientID string // cephx user without "client."; default "admin"
	Keyring  string // default: the conf's keyring setting
	Pool     string // default "rbd"
	Image    string // required
	// CreateSize, when positive, makes Open create a missing image of this size.
	CreateSize int64
	// ConnectTimeout bounds the wait for the monitors; 0 means 10 s.
	ConnectTimeout time.Duration
	// ReadOnly opens the image read-only; writes fail with EROFS from librbd.
	ReadOnly bool
}

// ErrNotBuilt is returned by every entry point of a binary built without
// `-tags ceph,pacific`.
var ErrNotBuilt = errors.New("rbd: polytropon was built without -tags ceph,pacific (librbd support)")

// BlockSize is the device's block size.
const BlockSize = 512

// OptimalIOSize is the request size the device reports as preferred.
const OptimalIOSize = 64 << 10

func (o *Options) withDefaults() (Options, error) {
	c := *o
	if c.Conf == "" {
		return c, errors.New("rbd: conf: required (the cluster's ceph.conf)")
	}
	if c.Image == "" {
		return c, errors.New("rbd: image: required")
	}
	if c.ClientID == "" {
		c.ClientID = "admin"
	}
	if c.Pool == "" {
		c.Pool = "rbd"
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.CreateSize < 0 {
		return c, errors.New("rbd: create size must not be negative")
	}
	return c, nil
}
