package cache

import _ "unsafe" // for go:linkname

// nanotime is the runtime's monotonic clock: what time.Now reads for its
// monotonic part, without the wall clock it also reads. A cached Stat checks
// its entry's expiry against it, and time.Since would double that cost.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64
