//go:build !amd64 || race || !gc

package rcqb

// storeSeq writes a slot's sequence word with release ordering: an atomic
// store, since outside amd64 (TSO) a plain store may become visible before the
// value written ahead of it. See store_tso_unsafe.go.
func (r *region) storeSeq(off int, v uint64) {
	r.storePlain(off+slotSeq, v)
}

// storePlain writes the 64-bit word at off with release ordering (see
// store_tso_unsafe.go).
func (r *region) storePlain(off int, v uint64) {
	r.u64(off).Store(v)
}
