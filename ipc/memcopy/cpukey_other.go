//go:build !amd64 || purego

package memcopy

import "os"

// detectCPU reads the identity from /proc/cpuinfo where there is no CPUID to
// call (other architectures, or builds without assembly). A failure gives a key
// with vendor "unknown", which no tuned profile matches.
func detectCPU() CPUKey {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return CPUKey{Vendor: "unknown", Features: []string{}}
	}
	defer f.Close()
	k, err := parseCPUInfo(f)
	if err != nil {
		return CPUKey{Vendor: "unknown", Features: []string{}}
	}
	return k
}
