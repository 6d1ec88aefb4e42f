package memcopy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testProfile returns a profile for this CPU that uses a different available
// kernel in each consecutive size class from 64 bytes up, cycling through them,
// so that copies across class boundaries switch kernel.
func testProfile(t *testing.T) *Profile {
	t.Helper()
	ks := availableKernels(t)
	p := &Profile{Version: ProfileVersion, CPU: HostCPU(), Created: time.Unix(1700000000, 0).UTC()}
	for c, i := 7, 0; c <= 24; c, i = c+1, i+1 {
		lo, hi := ClassRange(c)
		p.Classes = append(p.Classes, ClassChoice{MinBytes: lo, MaxBytes: hi, Kernel: ks[i%len(ks)].Name(), Speedup: 1.1})
	}
	return p
}

func TestCopierWithoutProfileUsesCopy(t *testing.T) {
	for _, c := range []*Copier{{}, mustCopier(t, nil), Default()} {
		for n := 0; n < 1<<30; n = n*2 + 1 {
			if k := c.KernelFor(n); k.Name() != builtinName {
				t.Fatalf("copier without profile uses %s for %d bytes, want copy()", k.Name(), n)
			}
		}
		if c.Profile() != nil {
			t.Errorf("copier without profile reports a profile")
		}
	}
}

func mustCopier(t *testing.T, p *Profile) *Copier {
	t.Helper()
	c, err := NewCopier(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCopierDispatch(t *testing.T) {
	p := testProfile(t)
	c := mustCopier(t, p)
	for _, cc := range p.Classes {
		for _, n := range []int{int(cc.MinBytes), int(cc.MaxBytes)} {
			if got := c.KernelFor(n).Name(); got != cc.Kernel {
				t.Errorf("%d bytes: kernel %s, want %s", n, got, cc.Kernel)
			}
		}
	}
	if got := c.KernelFor(63).Name(); got != builtinName {
		t.Errorf("63 bytes (unlisted class): kernel %s, want copy", got)
	}
	// Copies on both sides of every class boundary, odd offsets.
	chk := newChecker(1<<21 + 1)
	cp := &Kernel{name: "copier", available: true, fn: func(dst, src []byte) { c.Copy(dst, src) }}
	for cls := 6; cls <= 21; cls++ {
		b := 1 << cls
		for _, n := range []int{b - 1, b, b + 1} {
			if !chk.check(t, cp, n, 3, 61) {
				return
			}
		}
	}
	// copy() semantics on unequal lengths.
	src := bytes.Repeat([]byte{7}, 5000)
	if n := c.Copy(make([]byte, 3000), src); n != 3000 {
		t.Errorf("Copy(3000, 5000) = %d", n)
	}
	if n := c.Copy(make([]byte, 5000), src[:100]); n != 100 {
		t.Errorf("Copy(5000, 100) = %d", n)
	}
}

func TestSetDefault(t *testing.T) {
	t.Cleanup(func() { SetDefault(nil) })
	c := mustCopier(t, testProfile(t))
	SetDefault(c)
	if Default() != c {
		t.Fatal("Default does not return the copier just set")
	}
	src := make([]byte, 100000)
	fillSource(src)
	dst := make([]byte, len(src))
	if n := Copy(dst, src); n != len(src) || !bytes.Equal(dst, src) {
		t.Fatalf("Copy through the default copier: n=%d, equal=%v", n, bytes.Equal(dst, src))
	}
	SetDefault(nil)
	if Default().Profile() != nil || Default().KernelFor(1<<20).Name() != builtinName {
		t.Fatal("SetDefault(nil) did not restore the built-in copy")
	}
}

func TestCopyAllocs(t *testing.T) {
	c := mustCopier(t, testProfile(t))
	src := make([]byte, 64<<10)
	dst := make([]byte, len(src))
	for _, n := range []int{0, 1, 100, 4096, 64 << 10} {
		if a := testing.AllocsPerRun(100, func() { c.Copy(dst[:n], src[:n]); Copy(dst[:n], src[:n]) }); a != 0 {
			t.Errorf("Copy of %d bytes allocates %v times", n, a)
		}
	}
}

func TestProfileRoundTrip(t *testing.T) {
	p := testProfile(t)
	p.CPUName = "test CPU"
	p.GoVersion = "go1.26"
	p.Measurements = []Measurement{{Setting: "priv->shared/warm", Bytes: 4096, Kernel: "copy", GBps: 42.5}}
	path := filepath.Join(t.TempDir(), "sub", ProfileFile)
	if err := p.Save(path); err != nil {
		t.Fatal(err)
	}
	q, err := LoadProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.Marshal()
	b, _ := q.Marshal()
	if !bytes.Equal(a, b) {
		t.Fatalf("profile changed in a round trip:\n%s\n---\n%s", a, b)
	}
	if !q.Created.Equal(p.Created) || len(q.Classes) != len(p.Classes) || q.Classes[3] != p.Classes[3] {
		t.Fatalf("profile fields changed in a round trip: %+v", q)
	}
	if _, err := NewCopier(q); err != nil {
		t.Fatalf("NewCopier(round-tripped profile): %v", err)
	}
}

func TestProfileOtherCPU(t *testing.T) {
	for name, mutate := range map[string]func(*CPUKey){
		"vendor":   func(k *CPUKey) { k.Vendor = "GenuineIntel-not" },
		"family":   func(k *CPUKey) { k.Family++ },
		"model":    func(k *CPUKey) { k.Model++ },
		"features": func(k *CPUKey) { k.Features = append(k.Features, "avx9") },
	} {
		p := testProfile(t)
		p.CPU.Features = append([]string(nil), p.CPU.Features...)
		mutate(&p.CPU)
		_, err := NewCopier(p)
		if !errors.Is(err, ErrOtherCPU) {
			t.Errorf("%s differs: NewCopier error %v, want ErrOtherCPU", name, err)
			continue
		}
		if !strings.Contains(err.Error(), "tune copy") {
			t.Errorf("%s differs: error %q does not say how to fix it", name, err)
		}
	}
}

func TestProfileCorrupt(t *testing.T) {
	good, err := testProfile(t).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s := string(good)
	cases := map[string]string{
		"empty":          "",
		"not json":       "polytropon",
		"truncated":      s[:len(s)/2],
		"trailing":       s + "{}",
		"unknown field":  strings.Replace(s, `"version"`, `"vershun": 1, "version"`, 1),
		"wrong version":  strings.Replace(s, `"version": 1`, `"version": 99`, 1),
		"no vendor":      strings.Replace(s, `"vendor": "`+HostCPU().Vendor+`"`, `"vendor": ""`, 1),
		"unknown kernel": strings.Replace(s, `"kernel": "copy"`, `"kernel": "warp-drive"`, 1),
		"bad class":      strings.Replace(s, `"max_bytes": 127`, `"max_bytes": 128`, 1),
		"class twice":    strings.Replace(s, `"min_bytes": 128,`+"\n      "+`"max_bytes": 255`, `"min_bytes": 64,`+"\n      "+`"max_bytes": 127`, 1),
		"wrong type":     strings.Replace(s, `"version": 1`, `"version": "one"`, 1),
	}
	dir := t.TempDir()
	for name, data := range cases {
		if data == s {
			t.Fatalf("case %q: the replacement did not apply; fix the test", name)
		}
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadProfile(path)
		if !errors.Is(err, ErrBadProfile) {
			t.Errorf("%s: LoadProfile error %v, want ErrBadProfile", name, err)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
	if _, err := LoadProfile(filepath.Join(dir, "missing.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: error %v, want fs.ErrNotExist", err)
	}
	// A kernel this CPU lacks is refused by NewCopier, not at the first copy.
	for _, k := range Kernels() {
		if !k.Available() {
			p := testProfile(t)
			p.Classes[0].Kernel = k.Name()
			if _, err := NewCopier(p); !errors.Is(err, ErrBadProfile) {
				t.Errorf("profile naming unavailable kernel %s: error %v, want ErrBadProfile", k.Name(), err)
			}
		}
	}
}

func TestDefaultProfilePath(t *testing.T) {
	if got := DefaultProfilePath(true); got != "/var/lib/polytropon/"+ProfileFile {
		t.Errorf("daemon path %q", got)
	}
	t.Setenv("XDG_CONFIG_HOME", "/x/cfg")
	if got := DefaultProfilePath(false); got != "/x/cfg/polytropon/"+ProfileFile {
		t.Errorf("user path with XDG_CONFIG_HOME: %q", got)
	}
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got := DefaultProfilePath(false); got != "/home/u/.config/polytropon/"+ProfileFile {
		t.Errorf("user path from HOME: %q", got)
	}
}

func TestLoadDefault(t *testing.T) {
	t.Cleanup(func() { SetDefault(nil) })
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	if p, err := LoadDefault(false); p != nil || err != nil {
		t.Fatalf("no profile file: LoadDefault = %v, %v; want nil, nil", p, err)
	}
	path := DefaultProfilePath(false)
	bad := testProfile(t)
	bad.CPU.Model++
	if err := bad.Save(path); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDefault(false); !errors.Is(err, ErrOtherCPU) {
		t.Fatalf("other CPU's profile: error %v, want ErrOtherCPU", err)
	}
	if Default().Profile() != nil {
		t.Fatal("a rejected profile replaced the built-in copy")
	}
	if err := testProfile(t).Save(path); err != nil {
		t.Fatal(err)
	}
	p, err := LoadDefault(false)
	if err != nil || p == nil {
		t.Fatalf("good profile: LoadDefault = %v, %v", p, err)
	}
	if Default().Profile() != p {
		t.Fatal("LoadDefault did not install the profile")
	}
}

func TestParseCPUInfo(t *testing.T) {
	x86 := "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9654\n" +
		"flags\t\t: fpu avx avx2 avx512f erms fsrm avx512bw sse\n\nprocessor\t: 1\nvendor_id\t: Other\n"
	k, err := parseCPUInfo(strings.NewReader(x86))
	if err != nil {
		t.Fatal(err)
	}
	want := CPUKey{Vendor: "AuthenticAMD", Family: 25, Model: 17, Features: []string{"avx2", "avx512bw", "avx512f", "erms", "fsrm"}}
	if !k.Equal(want) {
		t.Errorf("x86 cpuinfo: %v, want %v", k, want)
	}
	arm := "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\n"
	k, err = parseCPUInfo(strings.NewReader(arm))
	if err != nil {
		t.Fatal(err)
	}
	if want := (CPUKey{Vendor: "0x41", Family: 8, Model: 0xd0c, Features: []string{}}); !k.Equal(want) {
		t.Errorf("arm64 cpuinfo: %v, want %v", k, want)
	}
	for _, bad := range []string{"", "processor: 0\n", "vendor_id: X\ncpu family: twenty\n"} {
		if _, err := parseCPUInfo(strings.NewReader(bad)); err == nil {
			t.Errorf("cpuinfo %q: no error", bad)
		}
	}
}

// TestHostCPUMatchesCPUInfo: CPUID (amd64) and /proc/cpuinfo (elsewhere) must
// give the same key on the same machine, or a profile tuned by one build would
// be refused by the other.
func TestHostCPUMatchesCPUInfo(t *testing.T) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Fatalf("/proc/cpuinfo: %v", err)
	}
	defer f.Close()
	k, err := parseCPUInfo(f)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Equal(HostCPU()) {
		t.Errorf("HostCPU() = %v, /proc/cpuinfo says %v", HostCPU(), k)
	}
}

// TestCopierBuiltinBound: the inlined fast path of Copy must cover exactly the
// lengths whose classes all use copy(): below builtinBelow every class is the
// built-in, and builtinBelow's own class is not.
func TestCopierBuiltinBound(t *testing.T) {
	for _, c := range []*Copier{mustCopier(t, nil), mustCopier(t, testProfile(t)), mustCopier(t, nonTemporalFrom(t, 15))} {
		below := c.builtinBelow
		for n := 0; n < 1<<30 && n < below; n = n*2 + 1 {
			if k := c.KernelFor(n); k.Name() != builtinName {
				t.Fatalf("builtinBelow %d but %d bytes use %s", below, n, k.Name())
			}
		}
		if below != math.MaxInt && c.KernelFor(below).Name() == builtinName {
			t.Errorf("builtinBelow %d is not the first length with a kernel", below)
		}
	}
}

// nonTemporalFrom is a profile shaped like the ones tune writes on this kind
// of machine: copy() below class c (2^(c-1) bytes), then the first non-builtin
// kernel up to 1 MiB.
func nonTemporalFrom(t testing.TB, c int) *Profile {
	var k *Kernel
	for _, kk := range Kernels() {
		if kk.Available() && kk.Name() != builtinName {
			k = kk
			break
		}
	}
	p := &Profile{Version: ProfileVersion, CPU: HostCPU(), Created: time.Unix(1700000000, 0).UTC()}
	if k == nil {
		return p // purego: copy() only
	}
	for ; c <= 21; c++ {
		lo, hi := ClassRange(c)
		p.Classes = append(p.Classes, ClassChoice{MinBytes: lo, MaxBytes: hi, Kernel: k.Name(), Speedup: 1.5})
	}
	return p
}

// BenchmarkCopierDispatch measures what the Copier adds over calling copy()
// at the sizes a tuned profile leaves to copy(), where the dispatch matters
// most: the Copier here uses a kernel from 16 KiB, as tune chooses on Zen 3.
func BenchmarkCopierDispatch(b *testing.B) {
	c, err := NewCopier(nonTemporalFrom(b, 15))
	if err != nil {
		b.Fatal(err)
	}
	prev := Default()
	SetDefault(c)
	defer SetDefault(prev)
	for _, n := range []int{64, 256, 4096} {
		src := make([]byte, n)
		dst := make([]byte, n)
		b.Run(fmt.Sprintf("%d/builtin", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				copy(dst, src)
			}
		})
		b.Run(fmt.Sprintf("%d/Copier.Copy", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				c.Copy(dst, src)
			}
		})
		b.Run(fmt.Sprintf("%d/Copy", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				Copy(dst, src)
			}
		})
	}
}
