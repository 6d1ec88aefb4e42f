package access

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Strictest is what Protected takes when the host's values cannot be read:
// every protection at its strongest, so that an unreadable /proc never makes the
// checker more permissive than the kernel.
var Strictest = Protected{Hardlinks: 1, Symlinks: 1, Regular: 2, FIFOs: 2}

// ReadProtected reads this host's fs.protected_* sysctls from /proc/sys/fs.
func ReadProtected() (Protected, error) {
	var p Protected
	for _, f := range []struct {
		name string
		dst  *int
	}{
		{"protected_hardlinks", &p.Hardlinks},
		{"protected_symlinks", &p.Symlinks},
		{"protected_regular", &p.Regular},
		{"protected_fifos", &p.FIFOs},
	} {
		b, err := os.ReadFile("/proc/sys/fs/" + f.name)
		if err != nil {
			return Strictest, fmt.Errorf("access: %w", err)
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || v < 0 {
			return Strictest, fmt.Errorf("access: /proc/sys/fs/%s: %q is not a level", f.name, b)
		}
		*f.dst = v
	}
	return p, nil
}
