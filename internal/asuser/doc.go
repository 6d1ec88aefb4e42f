// Package asuser runs code as another caller: on one locked OS thread whose
// kernel credentials (real, effective and filesystem uid and gid, supplementary
// groups, effective capabilities) are switched to a given peercred.Cred with raw
// per-thread system calls, while the rest of the process keeps its own.
//
// It is what the permission tests use to ask the kernel itself what a caller may
// do: a libservices/passthrough FS wrapped by FS answers every operation with the
// errno the kernel gives that caller (the oracle of libservices/fstest's
// permission cases); the same wrapper over a passthrough FS on a FUSE mountpoint
// drives the mount as that caller (the kernel puts the thread's fsuid, fsgid and
// thread id in each FUSE request header); and a direct-path client dialed inside
// Do carries the caller's identity, since SO_PEERCRED and SO_PEERGROUPS record
// the connecting thread's credentials.
//
// # How a thread becomes another caller
//
// The process must be root (tests only). Start locks a new goroutine to its OS
// thread and, on that thread only, calls SYS_SETGROUPS, SYS_SETRESGID and
// SYS_SETRESUID directly (the syscall and x/sys wrappers apply them to every
// thread of the process), keeping the saved uid 0 so that the permitted
// capability set survives, then sets the thread's effective capabilities to
// Cred.Caps (capset). A caller with uid 0 and no capabilities is therefore
// possible, which is how the tests show that privilege comes from capabilities,
// never from uid 0 alone. The thread never switches back: Close ends its
// goroutine while it is still locked, and the Go runtime then terminates the
// thread, so no other goroutine ever runs with the borrowed identity. The Go
// runtime creates new threads from a template thread when the creating thread is
// locked, so none inherits it either.
//
// Contract: Do runs one function at a time on the thread, in the order called;
// a Thread is safe for concurrent use. Lock order: none (a channel).
//
// It is a test helper: nothing on a service path uses it.
package asuser
