// Package cephfs is a libservices.FS over a CephFS, through libcephfs (go-ceph
// v0.34.0): the tenant's own user-level Ceph client, with no kernel mount.
//
// It builds only with `-tags ceph,pacific` (ceph: this package's cgo code;
// pacific: go-ceph's API level for Ceph 16.2). Without the tags the package still
// registers "cephfs" and parses its options, and building an FS returns
// ErrNotBuilt, so that the project builds on a machine with no Ceph libraries.
//
// Configuration (`- cephfs: {...}`):
//
//	conf: /path/ceph.conf        # required
//	client_id: libservice        # cephx user, without "client."; default "admin"
//	keyring: /path/keyring       # default: the conf's keyring setting
//	fs_name: cephfs              # default: the cluster's default filesystem
//	root: /tenants/a             # directory inside the CephFS that is the FS root
//	cache_size: 64MiB            # client_oc_size, the client's data cache
//	cache_inodes: 16384          # client_cache_size, the client's inode cache
//	mount_timeout: 10s           # how long to wait for the monitors at mount
//	shared: true                 # one mount for every instance with equal options
//
// Each FS is a libcephfs mount rooted at Root (ceph_mount with a root path), so
// that libcephfs itself resolves absolute symlinks and ".." inside the FS, like a
// chroot: paths never reach above Root. With Shared, instances built with the same
// libservices.Env.Shared and equal connection options (everything above but
// shared) use one mount, reference-counted: cloned containers share one client,
// one cache and one set of capabilities for the read-only lower layer of their
// root filesystems. The last CloseFS unmounts.
//
// Faults: a cluster that cannot be reached at mount fails New within
// MountTimeout with an error that names the monitor addresses. Once mounted,
// libcephfs retries operations across monitor and OSD restarts (an operation
// blocks until the daemon is back); Fsync and Fdatasync return only once the OSDs
// have the data, so what they acknowledged survives a restart
// (TestOSDRestartKeepsSyncedData, TestMonRestartKeepsSyncedData).
//
// Deviations from the contract, which the conformance run lists and skips
// (TestConformance's deviations): Blocks is derived from the size, as the kernel's
// Ceph client reports it (CephFS keeps no allocation map), so holes count as
// allocated; and a directory whose mtime was set back with Setattr did not get a
// new mtime from an entry created in it afterwards. Path resolution (resolve.go)
// is done here, not by libcephfs, and is not atomic with the operation that
// follows it.
//
// Errors are syscall.Errno (libcephfs returns negative errnos). The data path
// (ReadAt, WriteAt) calls libcephfs on the caller's buffer and allocates nothing.
//
// Lock order: sharedMount.mu, taken alone, only at New and CloseFS. A Handle's
// closed flag is atomic; there are no other locks.
//
// Measure: `go test -tags ceph,pacific -run '^$' -bench . ./libservices/cephfs`
// against a cluster (scripts/ceph-dev-cluster.sh up), and `polytropon perf paths
// --backend cephfs` (FUSE against the direct path on CephFS).
package cephfs

import (
	"errors"
	"time"

	"github.com/polytropon/polytropon/libservices"
)

// Options configure an FS. See the package documentation for the YAML keys.
type Options struct {
	Conf         string               `yaml:"conf"`
	ClientID     string               `yaml:"client_id"`
	Keyring      string               `yaml:"keyring"`
	FSName       string               `yaml:"fs_name"`
	Root         string               `yaml:"root"`
	CacheSize    libservices.ByteSize `yaml:"cache_size"`
	CacheInodes  int                  `yaml:"cache_inodes"`
	MountTimeout time.Duration        `yaml:"mount_timeout"`
	Shared       bool                 `yaml:"shared"`
}

// DefaultMountTimeout is how long New waits for the monitors when MountTimeout
// is 0 (libcephfs' own default is 300 s, too long to notice a wrong address).
const DefaultMountTimeout = 10 * time.Second

// ErrNotBuilt is what building an FS returns in a binary built without
// `-tags ceph,pacific`.
var ErrNotBuilt = errors.New("cephfs: polytropon was built without -tags ceph,pacific (libcephfs support)")

// Validate implements libservices.Validator.
func (o *Options) Validate() error {
	switch {
	case o.Conf == "":
		return errorString("conf: required (the cluster's ceph.conf)")
	case o.Root != "" && o.Root[0] != '/':
		return errorString("root: must be an absolute path inside the CephFS, e.g. /tenants/a")
	case o.CacheSize < 0:
		return errorString("cache_size: must not be negative")
	case o.CacheInodes < 0:
		return errorString("cache_inodes: must not be negative")
	case o.MountTimeout < 0:
		return errorString("mount_timeout: must not be negative")
	}
	return nil
}

func (o *Options) withDefaults() Options {
	c := *o
	if c.ClientID == "" {
		c.ClientID = "admin"
	}
	if c.Root == "" {
		c.Root = "/"
	}
	if c.MountTimeout == 0 {
		c.MountTimeout = DefaultMountTimeout
	}
	return c
}

type errorString string

func (e errorString) Error() string { return string(e) }

func init() {
	libservices.Register("cephfs", libservices.Leaf, func(o *Options, _ []libservices.FS, env *libservices.Env) (libservices.FS, error) {
		return build(*o, env)
	})
}
