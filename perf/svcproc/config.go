package svcproc

import (
	"fmt"
	"strings"
)

// MaxSocketPath is sizeof(sockaddr_un.sun_path), the terminating NUL
// included: a service socket path must be shorter.
const MaxSocketPath = 108

// Config is the configuration of a service with one instance, "root", at the
// root of the service namespace.
type Config struct {
	// Socket is the service's socket (shorter than MaxSocketPath).
	Socket string
	// Stack is the instance's stack and branches as YAML lines indented for a
	// filesystem entry (DefaultStack's form); empty means DefaultStack(Upper,
	// Lower).
	Stack string
	// Upper and Lower are the default stack's writable and read-only
	// passthrough branches.
	Upper, Lower string
	// FUSE, when set, mounts the instance there with the kernel's default
	// caching.
	FUSE string
	// FUSEUncached, when set, mounts it there too with the kernel's caches off
	// (names, attributes, pages): every call is a FUSE round trip.
	FUSEUncached string
}

// DefaultStack is the default stack of the design as Config.Stack: a 256 MiB
// write-back cache over a union of the writable upper and the read-only lower
// passthrough branch.
func DefaultStack(upper, lower string) string {
	return fmt.Sprintf(`    stack:
      - cache: {size: 256MiB, policy: writeback}
      - union: {}
    branches:
      - passthrough: {dir: %q}
      - passthrough: {dir: %q, readonly: true}
`, upper, lower)
}

// DefaultStackName describes DefaultStack, for reports.
const DefaultStackName = "cache(256MiB, writeback) > union > passthrough(upper), passthrough(lower, readonly)"

// YAML is the configuration file `polytropon service --config` reads. Workers
// and spin are the service's defaults.
func (c Config) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "socket: %q\n", c.Socket)
	b.WriteString("filesystems:\n  - name: root\n    mount: /\n")
	if c.FUSE != "" {
		fmt.Fprintf(&b, "    fuse: %q\n", c.FUSE)
	}
	if c.FUSEUncached != "" {
		fmt.Fprintf(&b, "    fuse_mounts:\n      - {path: %q, attr_timeout: -1s, entry_timeout: -1s, direct_io: true}\n", c.FUSEUncached)
	}
	if c.Stack != "" {
		b.WriteString(c.Stack)
	} else {
		b.WriteString(DefaultStack(c.Upper, c.Lower))
	}
	return b.String()
}
