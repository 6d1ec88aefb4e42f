package netstack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named namespaces live, the directory `ip netns` uses.
const NetnsDir = "/run/netns"

// PoolIf is the pool's end of the veth inside its namespace.
const PoolIf = "eth0"

// aliasPrefix marks the host end's link alias, so Reconcile never deletes a
// veth someone else gave a look-alike name.
const aliasPrefix = "polytropon:"

// Pool is one pool's network, as Setup made it.
type Pool struct {
	// Netns is the namespace's name; NetnsPath its bind mount, for setns(2) or
	// `ip netns exec Netns`.
	Netns     string
	NetnsPath string
	// HostIf is the host end of the veth; the pool's end is PoolIf.
	HostIf   string
	HostAddr net.IPNet
	PoolAddr net.IPNet
}

// Setup creates cfg's namespace, veth pair, addresses, default route and rate
// limits. It refuses to reuse leftovers (Reconcile removes them); on error it
// removes whatever it created.
func Setup(cfg Config) (p *Pool, err error) {
	r, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	p = &Pool{
		Netns:     r.nsName,
		NetnsPath: filepath.Join(NetnsDir, r.nsName),
		HostIf:    r.hostIf,
		HostAddr:  *r.hostAddr,
		PoolAddr:  *r.poolAddr,
	}
	if _, err := os.Lstat(p.NetnsPath); err == nil {
		return nil, fmt.Errorf("netstack: pool %s: namespace %s exists (a leftover? Reconcile(%q) removes it)", cfg.Pool, p.NetnsPath, r.prefix)
	}
	if _, err := netlink.LinkByName(p.HostIf); err == nil {
		return nil, fmt.Errorf("netstack: pool %s: interface %s exists (a leftover? Reconcile(%q) removes it)", cfg.Pool, p.HostIf, r.prefix)
	}
	if err := createNamedNetns(p.NetnsPath); err != nil {
		return nil, fmt.Errorf("netstack: pool %s: %w", cfg.Pool, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Teardown())
			p = nil
		}
	}()
	if err := p.configure(cfg); err != nil {
		return p, fmt.Errorf("netstack: pool %s: %w", cfg.Pool, err)
	}
	return p, nil
}

func (p *Pool) configure(cfg Config) error {
	ns, err := netns.GetFromPath(p.NetnsPath)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", p.NetnsPath, err)
	}
	defer ns.Close()
	inner, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in namespace %s: %w", p.Netns, err)
	}
	defer inner.Close()

	// The peer is created inside the namespace, so the name eth0 never has to
	// be free in the host's namespace.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostIf},
		PeerName:      PoolIf,
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", p.HostIf, PoolIf, err)
	}
	host, err := netlink.LinkByName(p.HostIf)
	if err != nil {
		return fmt.Errorf("find %s: %w", p.HostIf, err)
	}
	// LinkAdd does not carry the alias for a veth on every kernel.
	if err := netlink.LinkSetAlias(host, aliasPrefix+cfg.Pool); err != nil {
		return fmt.Errorf("alias %s: %w", p.HostIf, err)
	}
	eth0, err := inner.LinkByName(PoolIf)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", PoolIf, p.Netns, err)
	}
	lo, err := inner.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", p.Netns, err)
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: &p.HostAddr}); err != nil {
		return fmt.Errorf("address %s on %s: %w", p.HostAddr.String(), p.HostIf, err)
	}
	if err := inner.AddrAdd(eth0, &netlink.Addr{IPNet: &p.PoolAddr}); err != nil {
		return fmt.Errorf("address %s on %s: %w", p.PoolAddr.String(), PoolIf, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("up %s: %w", p.HostIf, err)
	}
	if err := inner.LinkSetUp(lo); err != nil {
		return fmt.Errorf("up lo: %w", err)
	}
	if err := inner.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("up %s: %w", PoolIf, err)
	}
	// Dst nil is the default route.
	if err := inner.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: p.HostAddr.IP}); err != nil {
		return fmt.Errorf("default route via %s: %w", p.HostAddr.IP, err)
	}
	if err := netlink.QdiscAdd(tbf(host.Attrs().Index, cfg)); err != nil {
		return fmt.Errorf("tbf on %s: %w", p.HostIf, err)
	}
	if err := inner.QdiscAdd(tbf(eth0.Attrs().Index, cfg)); err != nil {
		return fmt.Errorf("tbf on %s: %w", PoolIf, err)
	}
	return nil
}

func tbf(link int, cfg Config) *netlink.Tbf {
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: link,
			Handle:    netlink.MakeHandle(1, 0),
			Parent:    netlink.HANDLE_ROOT,
		},
		Rate: cfg.Rate,
		// The kernel wants the bucket as the time the rate takes to fill it,
		// in scheduler ticks, as tc computes it.
		Buffer: netlink.Xmittime(cfg.Rate, cfg.Burst),
		Limit:  uint32(limit(cfg.Rate, cfg.Burst, cfg.Latency)),
	}
}

// createNamedNetns makes a new network namespace and bind-mounts it at path,
// as `ip netns add` does. The unshare happens on a thread that is locked and
// never unlocked, so the runtime discards that thread and no goroutine ever
// runs in the new namespace by accident.
func createNamedNetns(path string) error {
	if err := sharedNetnsDir(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind %s at %s: %w", self, path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// sharedNetnsDir makes NetnsDir a shared mount point, as iproute2 does, so that
// a namespace mounted there later is visible in mount namespaces cloned earlier
// (containers started by `polytropon run`).
func sharedNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", NetnsDir, err)
	}
	err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: make it one, then share it.
		if err = unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", NetnsDir, err)
	}
	return nil
}

// removeNamedNetns unmounts and removes a namespace file; the namespace itself
// goes when its last process leaves. A missing file is not an error.
func removeNamedNetns(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// Teardown removes the rate limits, the veth pair (deleting the host end
// deletes both) and the namespace. It is idempotent: what is already gone is
// not an error.
func (p *Pool) Teardown() error {
	var errs []error
	if host, err := netlink.LinkByName(p.HostIf); err == nil {
		q := &netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: host.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT}}
		if err := netlink.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("netstack: remove tbf on %s: %w", p.HostIf, err))
		}
		if err := netlink.LinkDel(host); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("netstack: remove %s: %w", p.HostIf, err))
		}
	} else if !isNotFound(err) {
		errs = append(errs, fmt.Errorf("netstack: find %s: %w", p.HostIf, err))
	}
	if err := removeNamedNetns(p.NetnsPath); err != nil {
		errs = append(errs, fmt.Errorf("netstack: %w", err))
	}
	return errors.Join(errs...)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// Reconcile removes what a crashed process left with prefix's names: veths
// <prefix>-*-h in the host's namespace and namespace files <prefix>-* in
// NetnsDir. It returns the names it removed.
func Reconcile(prefix string) ([]string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !nameRE.MatchString(prefix) {
		return nil, cfgErr("Prefix", "%q: want letters, digits, '_', '-', not starting with punctuation", prefix)
	}
	var removed []string
	var errs []error
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("netstack: list links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || !strings.HasPrefix(a.Name, prefix+"-") || !strings.HasSuffix(a.Name, "-h") {
			continue
		}
		if a.Alias != "" && !strings.HasPrefix(a.Alias, aliasPrefix) {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("netstack: remove %s: %w", a.Name, err))
			continue
		}
		removed = append(removed, a.Name)
	}
	ents, err := os.ReadDir(NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("netstack: list %s: %w", NetnsDir, err))
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix+"-") {
			continue
		}
		if err := removeNamedNetns(filepath.Join(NetnsDir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("netstack: %w", err))
			continue
		}
		removed = append(removed, filepath.Join(NetnsDir, e.Name()))
	}
	return removed, errors.Join(errs...)
}

// Existing is the Pool named netns and hostIf, for tearing down what a crashed
// process recorded (Teardown needs nothing else).
func Existing(netns, hostIf string) *Pool {
	return &Pool{Netns: netns, NetnsPath: filepath.Join(NetnsDir, netns), HostIf: hostIf}
}
