//go:build !invariants

package invariants

// Enabled is false in normal builds: expensive checks are compiled out.
const Enabled = false
