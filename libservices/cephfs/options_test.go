package cephfs

import (
	"strings"
	"testing"

	"github.com/polytropon/polytropon/libservices"
)

// TestOptionsDecode runs with and without -tags ceph: the keys decode and bad
// values are refused with the key named, before any cluster is contacted.
func TestOptionsDecode(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"stack:\n  - cephfs: {}\n", "conf: required"},
		{"stack:\n  - cephfs: {conf: /x, root: rel}\n", "root: must be an absolute path"},
		{"stack:\n  - cephfs: {conf: /x, cache_size: 12XB}\n", "cache_size"},
		{"stack:\n  - cephfs: {conf: /x, mount_timeout: soon}\n", "mount_timeout"},
		{"stack:\n  - cephfs: {conf: /x, bogus: 1}\n", "unknown key"},
	} {
		c, err := libservices.ParseFilesystem([]byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		_, err = libservices.Build(c, "fs", nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.yaml, err, tc.want)
		}
	}
}
