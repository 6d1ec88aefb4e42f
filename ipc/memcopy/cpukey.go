package memcopy

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// CPUKey identifies the kind of CPU a profile was tuned on. Copy speeds differ
// between microarchitectures and with the features a hypervisor exposes, so a
// profile applies only where vendor, family, model and the copy-relevant
// features all match.
type CPUKey struct {
	Vendor string `json:"vendor"`
	Family int    `json:"family"`
	Model  int    `json:"model"`
	// Features are the copy-relevant CPU features present, sorted.
	Features []string `json:"features"`
}

// relevantFeatures are the features that change which kernels exist or how
// fast they are, with the names Linux uses in /proc/cpuinfo.
var relevantFeatures = []string{"avx2", "avx512bw", "avx512f", "erms", "fsrm"}

// Equal reports whether two keys name the same kind of CPU.
func (k CPUKey) Equal(o CPUKey) bool {
	return k.Vendor == o.Vendor && k.Family == o.Family && k.Model == o.Model &&
		slices.Equal(k.Features, o.Features)
}

func (k CPUKey) String() string {
	return fmt.Sprintf("%s family %d model %d [%s]", k.Vendor, k.Family, k.Model, strings.Join(k.Features, " "))
}

// HostCPU returns the key of the CPU this process runs on.
func HostCPU() CPUKey { return hostCPU }

var hostCPU = detectCPU()

// parseCPUInfo reads the first processor's identity from /proc/cpuinfo text.
// x86 names the fields vendor_id, cpu family, model and flags; arm64 names them
// CPU implementer, CPU architecture, CPU part and Features.
func parseCPUInfo(r io.Reader) (CPUKey, error) {
	var k CPUKey
	var flags string
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" && len(seen) > 0 {
			break // end of the first processor's block
		}
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if seen[name] {
			continue
		}
		seen[name] = true
		var err error
		switch name {
		case "vendor_id", "CPU implementer":
			k.Vendor = val
		case "cpu family", "CPU architecture":
			k.Family, err = strconv.Atoi(val)
		case "model", "CPU part":
			var v int64
			v, err = strconv.ParseInt(val, 0, 64)
			k.Model = int(v)
		case "flags", "Features":
			flags = val
		}
		if err != nil {
			return CPUKey{}, fmt.Errorf("memcopy: cpuinfo field %q: %w", name, err)
		}
	}
	if err := sc.Err(); err != nil {
		return CPUKey{}, fmt.Errorf("memcopy: reading cpuinfo: %w", err)
	}
	if k.Vendor == "" {
		return CPUKey{}, fmt.Errorf("memcopy: cpuinfo names no CPU vendor")
	}
	k.Features = filterFeatures(strings.Fields(flags))
	return k, nil
}

// filterFeatures keeps the relevant features of have, sorted.
func filterFeatures(have []string) []string {
	out := []string{}
	for _, f := range relevantFeatures {
		if slices.Contains(have, f) {
			out = append(out, f)
		}
	}
	return out
}
