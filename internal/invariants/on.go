//go:build invariants

package invariants

// Enabled is true in builds with the invariants tag: expensive checks run.
const Enabled = true
