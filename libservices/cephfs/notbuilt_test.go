//go:build !ceph

package cephfs

import (
	"errors"
	"testing"

	"github.com/polytropon/polytropon/libservices"
)

// TestNotBuilt: without -tags ceph a valid configuration is refused with
// ErrNotBuilt, which says how to build with Ceph support.
func TestNotBuilt(t *testing.T) {
	c, err := libservices.ParseFilesystem([]byte("stack:\n  - cephfs: {conf: /etc/ceph/ceph.conf, client_id: a, fs_name: cephfs, root: /t, cache_size: 64MiB, shared: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = libservices.Build(c, "fs", nil)
	if !errors.Is(err, ErrNotBuilt) && (err == nil || err.Error() != "fs.stack[0].cephfs: "+ErrNotBuilt.Error()) {
		t.Fatalf("error %v, want ErrNotBuilt", err)
	}
}
