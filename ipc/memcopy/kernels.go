package memcopy

import "slices"

// A Kernel is one way of copying bytes. Every kernel has the same contract:
//
//   - Copy(dst, src) copies min(len(dst), len(src)) bytes from src to dst and
//     returns that count, like the built-in copy.
//   - dst and src must not overlap (unlike copy and memmove): the vector kernels
//     load and store in an order that corrupts overlapping ranges. Builds with
//     the invariants tag check this and panic.
//   - Any length and any alignment of either slice; no byte of dst outside
//     [0, n) is read or written.
//
// The kernels differ only in speed, which depends on the CPU, on the size and on
// where the data lives (which caches hold the source and destination lines, and
// whether another core reads the destination next). A Copier picks one per size
// class from a tuned Profile.
type Kernel struct {
	name string
	// doc says in one line what the kernel does differently.
	doc string
	// needs names the CPU feature the kernel requires, for skip messages.
	needs string
	// available is false where the CPU lacks needs, or in builds without
	// assembly (other architectures, -tags purego).
	available bool
	// fn copies len(dst) bytes; callers pass len(dst) == len(src) > 0 and
	// ranges that do not overlap.
	fn func(dst, src []byte)
}

// Name is the kernel's stable identifier, as written in profiles.
func (k *Kernel) Name() string { return k.name }

// Doc says in one line how the kernel copies.
func (k *Kernel) Doc() string { return k.doc }

// Needs names the CPU feature or build the kernel requires.
func (k *Kernel) Needs() string { return k.needs }

// Available reports whether this CPU and build can run the kernel. Copy on an
// unavailable kernel falls back to the built-in copy rather than faulting on an
// illegal instruction.
func (k *Kernel) Available() bool { return k.available }

// Copy copies min(len(dst), len(src)) bytes with this kernel and returns the
// count. See Kernel for the contract.
func (k *Kernel) Copy(dst, src []byte) int {
	n := min(len(dst), len(src))
	if n == 0 {
		return 0
	}
	dst, src = dst[:n], src[:n]
	if checkOverlap {
		mustNotOverlap(dst, src)
	}
	if !k.available {
		return copy(dst, src)
	}
	k.fn(dst, src)
	return n
}

// builtinName is the kernel that is the Go built-in copy (runtime.memmove). It
// is always index 0 of the registry, so that the zero value of a Copier's
// table means "use copy()".
const builtinName = "copy"

// registry holds every kernel this build knows, available or not, in a fixed
// order; a Copier stores indexes into it. It is built once at init and never
// changes, so reading it needs no lock.
var registry = buildRegistry()

func buildRegistry() []*Kernel {
	builtin := &Kernel{
		name:      builtinName,
		doc:       "Go built-in copy (runtime memmove): SSE/AVX, non-temporal only from 1 MiB",
		needs:     "nothing",
		available: true,
		fn:        func(dst, src []byte) { copy(dst, src) },
	}
	ks := append([]*Kernel{builtin}, platformKernels()...)
	if len(ks) > 255 {
		panic("memcopy: more kernels than a uint8 index holds")
	}
	return ks
}

// Kernels returns every kernel this build knows, including those this CPU
// cannot run (see Kernel.Available), the built-in copy first. The slice is a
// copy; the kernels are shared and immutable.
func Kernels() []*Kernel { return slices.Clone(registry) }

// KernelByName returns the kernel with that name, or nil.
func KernelByName(name string) *Kernel {
	if i := kernelIndex(name); i >= 0 {
		return registry[i]
	}
	return nil
}

func kernelIndex(name string) int {
	for i, k := range registry {
		if k.name == name {
			return i
		}
	}
	return -1
}
