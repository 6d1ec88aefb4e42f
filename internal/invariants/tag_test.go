//go:build invariants

package invariants

import "testing"

// This file only compiles under the tag, so it proves the tag reaches the package.
func TestEnabledUnderTag(t *testing.T) {
	if !Enabled {
		t.Fatal("Enabled is false in an invariants build")
	}
}
