package netstack

import (
	"fmt"
	"net"
	"regexp"
	"time"
)

// MaxIfName is the longest interface name Linux accepts (IFNAMSIZ-1).
const MaxIfName = 15

// DefaultPrefix names everything polytropon creates, so Reconcile can find it.
const DefaultPrefix = "pt"

// Config is one pool's network.
type Config struct {
	// Pool is the pool's name: the namespace is <Prefix>-<Pool>, the host end of
	// the veth <Prefix>-<Pool>-h, which must fit in MaxIfName bytes.
	Pool string
	// Prefix defaults to DefaultPrefix.
	Prefix string
	// HostAddr and PoolAddr are CIDRs in one subnet, e.g. 10.77.1.1/30 on the
	// host end and 10.77.1.2/30 on eth0 in the pool.
	HostAddr string
	PoolAddr string
	// Rate in bytes per second, applied in each direction.
	Rate uint64
	// Burst is the token bucket's size in bytes; at least one MTU-sized packet
	// must fit, or TBF drops every full-sized packet.
	Burst uint32
	// Latency is how long a packet may wait in the queue before it is dropped;
	// with Rate it sizes the queue.
	Latency time.Duration
}

// ConfigError names the field that is wrong.
type ConfigError struct {
	Field string
	Msg   string
}

func (e *ConfigError) Error() string { return "netstack: config " + e.Field + ": " + e.Msg }

func cfgErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Same alphabet as pool names, minus '.': an interface name may contain a dot
// but tc and VLAN tooling read "x.y" as a sub-interface.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// minBurst is one full Ethernet frame: a smaller bucket can never send one.
const minBurst = 1514

type resolved struct {
	prefix, nsName, hostIf string
	hostAddr, poolAddr     *net.IPNet
}

func (c Config) resolve() (resolved, error) {
	var r resolved
	r.prefix = c.Prefix
	if r.prefix == "" {
		r.prefix = DefaultPrefix
	}
	if !nameRE.MatchString(r.prefix) {
		return r, cfgErr("Prefix", "%q: want letters, digits, '_', '-', not starting with punctuation", r.prefix)
	}
	if c.Pool == "" {
		return r, cfgErr("Pool", "empty")
	}
	if !nameRE.MatchString(c.Pool) {
		return r, cfgErr("Pool", "%q: want letters, digits, '_', '-', not starting with punctuation", c.Pool)
	}
	r.nsName = r.prefix + "-" + c.Pool
	r.hostIf = r.nsName + "-h"
	if len(r.hostIf) > MaxIfName {
		return r, cfgErr("Pool", "%q too long: the host interface %q is %d bytes, Linux allows %d (pool name at most %d bytes with prefix %q)",
			c.Pool, r.hostIf, len(r.hostIf), MaxIfName, MaxIfName-len(r.prefix)-3, r.prefix)
	}
	var err error
	if r.hostAddr, err = parseCIDR("HostAddr", c.HostAddr); err != nil {
		return r, err
	}
	if r.poolAddr, err = parseCIDR("PoolAddr", c.PoolAddr); err != nil {
		return r, err
	}
	hOnes, hBits := r.hostAddr.Mask.Size()
	pOnes, pBits := r.poolAddr.Mask.Size()
	if hBits != pBits || hOnes != pOnes || !r.hostAddr.Contains(r.poolAddr.IP) {
		return r, cfgErr("PoolAddr", "%s is not in HostAddr's subnet %s", c.PoolAddr, c.HostAddr)
	}
	if r.hostAddr.IP.Equal(r.poolAddr.IP) {
		return r, cfgErr("PoolAddr", "%s is the same address as HostAddr", c.PoolAddr)
	}
	if c.Rate == 0 {
		return r, cfgErr("Rate", "0 bytes/s: want a positive rate")
	}
	if c.Burst < minBurst {
		return r, cfgErr("Burst", "%d bytes: want at least %d (one full Ethernet frame)", c.Burst, minBurst)
	}
	if c.Latency <= 0 {
		return r, cfgErr("Latency", "%v: want a positive duration", c.Latency)
	}
	if limit(c.Rate, c.Burst, c.Latency) > 1<<32-1 {
		return r, cfgErr("Latency", "%v at %d bytes/s needs a queue over 4 GiB", c.Latency, c.Rate)
	}
	return r, nil
}

// parseCIDR keeps the address itself (net.ParseCIDR's IPNet is the network).
func parseCIDR(field, s string) (*net.IPNet, error) {
	if s == "" {
		return nil, cfgErr(field, "empty: want an address with a prefix length, e.g. 10.77.1.1/30")
	}
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, cfgErr(field, "%q is not an address/prefix-length: %v", s, err)
	}
	if ones, bits := n.Mask.Size(); bits-ones >= 2 && ip.Equal(n.IP) {
		return nil, cfgErr(field, "%s is the subnet's network address, not a host address", s)
	}
	ones, bits := n.Mask.Size()
	if bits-ones < 1 {
		return nil, cfgErr(field, "%s: a /%d leaves no room for a second address", s, ones)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return &net.IPNet{IP: ip, Mask: n.Mask}, nil
}

// limit is the TBF queue length in bytes, computed as tc does: what the rate
// drains in Latency, plus the bucket.
func limit(rate uint64, burst uint32, latency time.Duration) uint64 {
	return uint64(float64(rate)*latency.Seconds()) + uint64(burst)
}

// Validate checks c as Setup would, without touching the system; a
// *ConfigError names the bad field.
func (c Config) Validate() error {
	_, err := c.resolve()
	return err
}

// Names are the namespace's and the host interface's names that Setup would
// give cfg's pool; they depend on Prefix and Pool only, so a record of them
// finds a crashed pool's network again.
func (c Config) Names() (netns, hostIf string) {
	prefix := c.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return prefix + "-" + c.Pool, prefix + "-" + c.Pool + "-h"
}
