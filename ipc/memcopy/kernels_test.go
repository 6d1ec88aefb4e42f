package memcopy

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

// guard is the byte value around every destination; no source byte equals it
// at a guarded position by construction of fillSource, so a stray store is seen.
const guard = 0xA5

// guardLen bytes before and after each destination are checked untouched: more
// than the widest vector (64 B), so a store one vector too far is caught.
const guardLen = 128

// fillSource writes a pattern with a short period-breaking term so that a
// kernel copying from the wrong offset or in the wrong order is caught, and no
// byte equals guard.
func fillSource(b []byte) {
	for i := range b {
		v := byte(i*7 + i>>8 + 1)
		if v == guard {
			v = 0x5A
		}
		b[i] = v
	}
}

// availableKernels returns the kernels this CPU runs, logging each one it
// cannot, so that a run on a CPU without AVX-512 says what it did not test.
func availableKernels(t testing.TB) []*Kernel {
	t.Helper()
	var ks []*Kernel
	for _, k := range Kernels() {
		if !k.Available() {
			t.Logf("kernel %s not run: this CPU or build lacks %s", k.Name(), k.Needs())
			continue
		}
		ks = append(ks, k)
	}
	return ks
}

// checker copies with a kernel into a guarded destination and checks the
// result against the source.
type checker struct {
	src, dst []byte
	// guards is all guard bytes, as long as dst: resetting and checking the
	// guard regions are then copy and bytes.Equal, which keeps the full
	// offset product fast.
	guards []byte
}

func newChecker(maxN int) *checker {
	c := &checker{src: make([]byte, maxN+64), dst: make([]byte, maxN+64+2*guardLen)}
	fillSource(c.src)
	c.guards = bytes.Repeat([]byte{guard}, len(c.dst))
	return c
}

func (c *checker) check(t *testing.T, k *Kernel, n, srcOff, dstOff int) bool {
	t.Helper()
	end := guardLen + dstOff + n + guardLen
	copy(c.dst[:end], c.guards)
	src := c.src[srcOff : srcOff+n]
	start := guardLen + dstOff
	dst := c.dst[start : start+n]
	if got := k.Copy(dst, src); got != n {
		t.Errorf("%s: n=%d srcOff=%d dstOff=%d: Copy returned %d", k.Name(), n, srcOff, dstOff, got)
		return false
	}
	if !bytes.Equal(dst, src) {
		i := 0
		for dst[i] == src[i] {
			i++
		}
		t.Errorf("%s: n=%d srcOff=%d dstOff=%d: first wrong byte at %d: got %#x want %#x",
			k.Name(), n, srcOff, dstOff, i, dst[i], src[i])
		return false
	}
	if bytes.Equal(c.dst[:start], c.guards[:start]) && bytes.Equal(c.dst[start+n:end], c.guards[start+n:end]) {
		return true
	}
	for i, b := range c.dst[:end] {
		if (i < start || i >= start+n) && b != guard {
			t.Errorf("%s: n=%d srcOff=%d dstOff=%d: guard byte at %d (destination %+d) overwritten with %#x",
				k.Name(), n, srcOff, dstOff, i, i-start, b)
			return false
		}
	}
	return true
}

// TestKernelsSmall copies every length up to 300 bytes with every destination
// offset within a cache line and, for each, a set of source offsets that covers
// equal, opposite, length-dependent and fixed misalignments. The full 64x64
// product of offsets is run by TestKernelsSmallFull in long mode.
func TestKernelsSmall(t *testing.T) {
	for _, k := range availableKernels(t) {
		t.Run(k.Name(), func(t *testing.T) {
			c := newChecker(300)
			for n := 0; n <= 300; n++ {
				for dstOff := range 64 {
					offs := []int{0, 1, 63, dstOff, 63 - dstOff, (dstOff + n) % 64, (dstOff*5 + n*3) % 64}
					slices.Sort(offs)
					for _, srcOff := range slices.Compact(offs) {
						if !c.check(t, k, n, srcOff, dstOff) {
							return
						}
					}
				}
			}
		})
	}
}

// TestKernelsSmallFull is the full product: every length up to 300 x every
// source offset x every destination offset in a cache line.
func TestKernelsSmallFull(t *testing.T) {
	if testing.Short() {
		t.Log("full offset product not run in -short mode; TestKernelsSmall samples it")
		return
	}
	if raceEnabled {
		t.Log("full offset product not run under -race (too slow); TestKernelsSmall samples it")
		return
	}
	for _, k := range availableKernels(t) {
		t.Run(k.Name(), func(t *testing.T) {
			c := newChecker(300)
			for n := 0; n <= 300; n++ {
				for dstOff := range 64 {
					for srcOff := range 64 {
						if !c.check(t, k, n, srcOff, dstOff) {
							return
						}
					}
				}
			}
		})
	}
}

// thresholdSizes are lengths on both sides of every branch point of the
// kernels: the small-copy bands (8, 16, 32, 64, 128, 256), the loop strides
// (128 and 256 bytes, so remainders of every size class) after head alignment,
// and page, 64 KiB and 1 MiB boundaries where copy() itself changes strategy
// (non-temporal from 1 MiB).
func thresholdSizes() []int {
	var sizes []int
	for _, edge := range []int{1, 2, 4, 8, 16, 32, 64, 128, 256, 512} {
		for d := -2; d <= 2; d++ {
			if edge+d >= 0 {
				sizes = append(sizes, edge+d)
			}
		}
	}
	// Loop trip counts 1..4 with every remainder class relative to a stride.
	for _, stride := range []int{128, 256} {
		for trips := 1; trips <= 4; trips++ {
			for _, r := range []int{0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 191, 255} {
				sizes = append(sizes, stride*trips+r)
			}
		}
	}
	for _, edge := range []int{4096, 64 << 10, 1 << 20, 4 << 20} {
		sizes = append(sizes, edge-65, edge-1, edge, edge+1, edge+63, edge+257)
	}
	slices.Sort(sizes)
	return slices.Compact(sizes)
}

func TestKernelsThresholds(t *testing.T) {
	sizes := thresholdSizes()
	offs := [][2]int{{0, 0}, {1, 0}, {0, 1}, {31, 33}, {32, 0}, {63, 63}, {17, 45}}
	for _, k := range availableKernels(t) {
		t.Run(k.Name(), func(t *testing.T) {
			c := newChecker(sizes[len(sizes)-1])
			for _, n := range sizes {
				o := offs
				if n > 64<<10 {
					// Large copies differ from small ones only in head and
					// tail alignment: two offset pairs cover them, and keep
					// the test fast under -race, which checks every byte
					// copy() touches.
					o = o[2:4]
				}
				for _, o := range o {
					if !c.check(t, k, n, o[0], o[1]) {
						return
					}
				}
			}
		})
	}
}

// TestKernelCopySemantics: lengths follow copy(): the shorter slice wins.
func TestKernelCopySemantics(t *testing.T) {
	for _, k := range availableKernels(t) {
		src := make([]byte, 1000)
		fillSource(src)
		for _, tc := range []struct{ dst, src, want int }{{0, 10, 0}, {10, 0, 0}, {500, 1000, 500}, {1000, 700, 700}} {
			dst := make([]byte, tc.dst)
			if got := k.Copy(dst, src[:tc.src]); got != tc.want {
				t.Errorf("%s: Copy(len %d, len %d) = %d, want %d", k.Name(), tc.dst, tc.src, got, tc.want)
			}
			if !bytes.Equal(dst[:tc.want], src[:tc.want]) {
				t.Errorf("%s: Copy(len %d, len %d) copied wrong bytes", k.Name(), tc.dst, tc.src)
			}
		}
	}
}

// TestRegistry: names are unique, the built-in copy is first, and kernels the
// CPU supports are marked available.
func TestRegistry(t *testing.T) {
	ks := Kernels()
	if ks[0].Name() != builtinName || !ks[0].Available() {
		t.Fatalf("first kernel is %q (available %v), want the built-in copy", ks[0].Name(), ks[0].Available())
	}
	seen := map[string]bool{}
	for _, k := range ks {
		if seen[k.Name()] {
			t.Errorf("kernel name %q registered twice", k.Name())
		}
		seen[k.Name()] = true
		if KernelByName(k.Name()) != k {
			t.Errorf("KernelByName(%q) does not return the registered kernel", k.Name())
		}
		if k.Doc() == "" || k.Needs() == "" {
			t.Errorf("kernel %q has no doc or needs", k.Name())
		}
	}
	if KernelByName("no-such-kernel") != nil {
		t.Error("KernelByName found a kernel that does not exist")
	}
	feat := HostCPU().Features
	for _, k := range ks {
		var need string
		switch k.Needs() {
		case "AVX2":
			need = "avx2"
		case "AVX-512F":
			need = "avx512f"
		default:
			continue
		}
		if slices.Contains(feat, need) && !k.Available() {
			t.Errorf("kernel %s: CPU has %s but the kernel is not available", k.Name(), need)
		}
	}
	t.Logf("CPU %v; %d kernels registered, %d runnable", HostCPU(), len(ks), len(availableKernels(t)))
}

func FuzzKernels(f *testing.F) {
	f.Add([]byte("hello, world"), uint8(0), uint8(0))
	f.Add(bytes.Repeat([]byte{1, 2, 3}, 200), uint8(3), uint8(61))
	f.Add(bytes.Repeat([]byte{9}, 1025), uint8(63), uint8(1))
	ks := availableKernels(f)
	f.Fuzz(func(t *testing.T, src []byte, srcOff, dstOff uint8) {
		so, do := int(srcOff)%64, int(dstOff)%64
		if so > len(src) {
			so = len(src)
		}
		src = src[so:]
		want := make([]byte, len(src)+do+guardLen)
		for i := range want {
			want[i] = guard
		}
		copy(want[do:], src)
		for _, k := range ks {
			got := make([]byte, len(want))
			for i := range got {
				got[i] = guard
			}
			if n := k.Copy(got[do:do+len(src)], src); n != len(src) {
				t.Fatalf("%s: copied %d of %d", k.Name(), n, len(src))
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: len %d srcOff %d dstOff %d: result differs from copy()", k.Name(), len(src), so, do)
			}
		}
	})
}

func BenchmarkKernels(b *testing.B) {
	for _, k := range availableKernels(b) {
		for _, n := range benchSizes {
			src := make([]byte, n)
			dst := make([]byte, n)
			b.Run(fmt.Sprintf("%s/%s", k.Name(), sizeName(n)), func(b *testing.B) {
				b.SetBytes(int64(n))
				for b.Loop() {
					k.Copy(dst, src)
				}
			})
		}
	}
}

var benchSizes = []int{64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
