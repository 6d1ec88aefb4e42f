//go:build !purego

package memcopy

import "golang.org/x/sys/cpu"

// detectCPU reads the identity with CPUID, which is exact and needs no /proc.
// AVX features come from x/sys/cpu, which also checks that the OS saves the
// vector registers; FSRM (CPUID.7.0:EDX[4]) is not in x/sys/cpu.
func detectCPU() CPUKey {
	_, b, c, d := cpuid(0, 0)
	vendor := string([]byte{
		byte(b), byte(b >> 8), byte(b >> 16), byte(b >> 24),
		byte(d), byte(d >> 8), byte(d >> 16), byte(d >> 24),
		byte(c), byte(c >> 8), byte(c >> 16), byte(c >> 24),
	})
	a, _, _, _ := cpuid(1, 0)
	family := int(a>>8) & 0xf
	model := int(a>>4) & 0xf
	if family == 0xf || family == 0x6 {
		model += int(a>>16&0xf) << 4
	}
	if family == 0xf {
		family += int(a>>20) & 0xff
	}
	_, _, _, d7 := cpuid(7, 0)
	var have []string
	if cpu.X86.HasAVX2 {
		have = append(have, "avx2")
	}
	if cpu.X86.HasAVX512F {
		have = append(have, "avx512f")
	}
	if cpu.X86.HasAVX512BW {
		have = append(have, "avx512bw")
	}
	if cpu.X86.HasERMS {
		have = append(have, "erms")
	}
	if d7&(1<<4) != 0 {
		have = append(have, "fsrm")
	}
	return CPUKey{Vendor: vendor, Family: family, Model: model, Features: filterFeatures(have)}
}
