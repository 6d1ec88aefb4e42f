//go:build !ceph

package rbd

import (
	"errors"
	"testing"
)

func TestNotBuilt(t *testing.T) {
	if _, err := Open(Options{Conf: "/etc/ceph/ceph.conf", Image: "x"}); !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("Open: %v, want ErrNotBuilt", err)
	}
}
