//go:build invariants

package memcopy

import (
	"strings"
	"testing"
)

// TestOverlapPanics: in invariants builds an overlapping copy is caught before
// any byte moves, for every kernel and through a Copier.
func TestOverlapPanics(t *testing.T) {
	buf := make([]byte, 4096)
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			r := recover()
			if r == nil {
				t.Errorf("%s: overlapping copy did not panic", name)
			} else if !strings.Contains(r.(string), "overlaps") {
				t.Errorf("%s: panic %v does not say overlap", name, r)
			}
		}()
		f()
	}
	for _, k := range Kernels() {
		mustPanic(k.Name(), func() { k.Copy(buf[100:1100], buf[0:1000]) })
		mustPanic(k.Name()+" reversed", func() { k.Copy(buf[0:1000], buf[999:1999]) })
	}
	mustPanic("Copy", func() { Copy(buf[1:], buf) })
	// Adjacent ranges do not overlap.
	Copy(buf[1000:2000], buf[0:1000])
	for _, k := range availableKernels(t) {
		k.Copy(buf[2000:3000], buf[1000:2000])
	}
}
