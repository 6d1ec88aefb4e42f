// Package tune measures memcopy's kernels in the settings of the direct path
// and chooses one per size class: the engine behind `polytropon tune copy`
// (Run, Choose, Confirm, then memcopy.Profile.Save) and `polytropon perf copy`
// (Compare: the tuned Copier against copy(), judged per cell against
// GoalBound). It lives beside the kernels it tunes; package memcopy itself
// stays a leaf that imports only the standard library, x/sys and the
// invariants switch, and knows nothing of how its profile was made.
//
// Settings: a private source copied into a shared memfd mapping (MAP_SHARED)
// that a reader child process on another core then reads, and a shared source
// the child just wrote copied into private memory; each with warm destinations
// (the same buffers reused) and cold ones (rotating through 64 MiB or more).
// Every size and setting interleaves samples of all candidates (one round per
// repetition, the order shuffled each round) and keeps the median. A kernel is
// timed through a function value, as a Copier calls it; copy() and a tuned
// Copier run inline in their own loops (Candidate.Batch), as their callers run
// them. Choose replaces copy() in a class only where a kernel gains at least
// MinGain (3 %) and loses no more than MaxLoss (2 %) anywhere in the class,
// comparing round by round when the samples were kept.
//
// The reader child is this executable started again from /proc/self/exe with
// Options.ChildArgs and an environment marker; its main calls ServeChild when
// IsChild reports true. Parent and child synchronise through two atomic words
// in the shared mapping's first page (layout in child.go) with bounded waits,
// and the child dies with the parent (PR_SET_PDEATHSIG).
//
// What it is not: a hot-path component. It allocates freely, pins its thread
// and the child to two CPUs for the run, and uses a few hundred MiB.
//
// Locking: none; Run is single-threaded and the child protocol is one
// request at a time.
package tune
