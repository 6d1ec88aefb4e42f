package shm

// CopyData copies min(len(dst), len(src)) bytes from src to dst and returns the count.
//
// Every data copy of the direct path between a private buffer and a shared region
// (client request and reply data, service handlers filling a client's buffer) goes
// through this one function, so that switching it to the tuned ipc/memcopy kernels
// is a one-line change measured in one place.
func CopyData(dst, src []byte) int { return copy(dst, src) }
