package testenv

import (
	"os"
	"testing"
)

// CephCluster is how a test reaches the cluster of scripts/ceph-dev-cluster.sh,
// read from the POLYTROPON_CEPH_* variables that `ceph-dev-cluster.sh env` prints.
type CephCluster struct {
	Conf    string // ceph.conf
	ID      string // cephx client id, without "client."
	Keyring string // that client's keyring
	Dir     string // the cluster's state directory (for restart-osd)
}

// Ceph returns the cluster given by the environment, or skips (fails when
// Required) when there is none.
func Ceph(t testing.TB) CephCluster {
	t.Helper()
	c := CephCluster{
		Conf:    os.Getenv("POLYTROPON_CEPH_CONF"),
		ID:      os.Getenv("POLYTROPON_CEPH_ID"),
		Keyring: os.Getenv("POLYTROPON_CEPH_KEYRING"),
		Dir:     os.Getenv("POLYTROPON_CEPH_DIR"),
	}
	if c.Conf == "" || c.ID == "" {
		SkipOrFail(t, "test needs a Ceph cluster: run `eval \"$(scripts/ceph-dev-cluster.sh up)\"` (POLYTROPON_CEPH_CONF and POLYTROPON_CEPH_ID are unset)")
		return c
	}
	if _, err := os.Stat(c.Conf); err != nil {
		SkipOrFail(t, "test needs a Ceph cluster: "+err.Error())
	}
	return c
}
