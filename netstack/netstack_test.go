package netstack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testPrefix keeps the tests' objects apart from a running serve's and from
// those of a test process running at the same time (the -race and
// -tags invariants suites, another checkout), since Reconcile(testPrefix)
// removes everything under it: "t" and the pid in base 36 (at most 6 bytes)
// leave room for the pools' 2-byte names within MaxIfName.
var testPrefix = "t" + strconv.FormatInt(int64(os.Getpid()), 36)

// testConfig is pool's network on the /30 numbered subnet (0-7) of this
// process's /27 in 10.77/16: two test processes on the same subnet would
// route each other's replies.
func testConfig(pool string, subnet int) Config {
	block := os.Getpid() % 2048 // the /27s of a /16
	third, fourth := block/8, (block%8)*32+subnet*4
	return configWith(pool, fmt.Sprintf("10.77.%d.%d/30", third, fourth+1), fmt.Sprintf("10.77.%d.%d/30", third, fourth+2))
}

func configWith(pool, hostAddr, poolAddr string) Config {
	return Config{
		Pool:     pool,
		Prefix:   testPrefix,
		HostAddr: hostAddr,
		PoolAddr: poolAddr,
		Rate:     1 << 20,
		Burst:    32 << 10,
		Latency:  200 * time.Millisecond,
	}
}

func setup(t *testing.T, cfg Config) *Pool {
	t.Helper()
	testenv.Root(t)
	p, err := Setup(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Teardown(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// inNetns runs f on a thread in the pool's namespace. The thread stays locked,
// so the runtime discards it afterwards.
func inNetns(t *testing.T, p *Pool, f func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromPath(p.NetnsPath)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

func TestSetupReachableAndLimited(t *testing.T) {
	cfg := testConfig("a1", 0)
	p := setup(t, cfg)

	ln, err := net.Listen("tcp", net.JoinHostPort(p.HostAddr.IP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	err = inNetns(t, p, func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if got := c.LocalAddr().(*net.TCPAddr).IP; !got.Equal(p.PoolAddr.IP) {
			t.Errorf("connection from %v, want the pool address %v", got, p.PoolAddr.IP)
		}
		b, err := io.ReadAll(c)
		if err != nil {
			return err
		}
		if string(b) != "hello" {
			t.Errorf("read %q, want hello", b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("connect from the pool to the host end: %v", err)
	}

	// iproute2 sees the namespace as one of its own.
	if ip, err := exec.LookPath("ip"); err == nil {
		out, err := exec.Command(ip, "netns", "exec", p.Netns, ip, "-o", "addr", "show", "dev", PoolIf).CombinedOutput()
		if err != nil || !strings.Contains(string(out), p.PoolAddr.String()) {
			t.Errorf("ip netns exec %s ip addr show: %v: %s; want %s", p.Netns, err, out, p.PoolAddr.String())
		}
	}

	host, err := netlink.LinkByName(p.HostIf)
	if err != nil {
		t.Fatal(err)
	}
	if host.Attrs().Alias != aliasPrefix+"a1" {
		t.Errorf("alias %q", host.Attrs().Alias)
	}
	checkTBF(t, netlink.QdiscList, host, cfg)

	ns, err := netns.GetFromPath(p.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName(PoolIf)
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().OperState != netlink.OperUp {
		t.Errorf("%s is %v, want up", PoolIf, eth0.Attrs().OperState)
	}
	checkTBF(t, h.QdiscList, eth0, cfg)
	routes, err := h.RouteList(eth0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var dflt bool
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(p.HostAddr.IP) {
			dflt = true
		}
	}
	if !dflt {
		t.Errorf("no default route via %v in %v", p.HostAddr.IP, routes)
	}
}

func checkTBF(t *testing.T, list func(netlink.Link) ([]netlink.Qdisc, error), l netlink.Link, cfg Config) {
	t.Helper()
	qs, err := list(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if tb, ok := q.(*netlink.Tbf); ok && q.Attrs().Parent == netlink.HANDLE_ROOT {
			if tb.Rate != cfg.Rate {
				t.Errorf("%s: tbf rate %d, want %d", l.Attrs().Name, tb.Rate, cfg.Rate)
			}
			if want := uint32(limit(cfg.Rate, cfg.Burst, cfg.Latency)); tb.Limit != want {
				t.Errorf("%s: tbf limit %d, want %d", l.Attrs().Name, tb.Limit, want)
			}
			return
		}
	}
	t.Errorf("%s: no root tbf among %v", l.Attrs().Name, qs)
}

func TestTeardownLeavesNothing(t *testing.T) {
	testenv.Root(t)
	p, err := Setup(testConfig("a2", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.NetnsPath); err != nil {
		t.Fatalf("namespace file: %v", err)
	}
	if err := p.Teardown(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, p)
	if err := p.Teardown(); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
}

func assertGone(t *testing.T, p *Pool) {
	t.Helper()
	if _, err := os.Lstat(p.NetnsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file %s still there: %v", p.NetnsPath, err)
	}
	if _, err := netlink.LinkByName(p.HostIf); err == nil {
		t.Errorf("veth %s still there", p.HostIf)
	}
	if mountedAt(t, p.NetnsPath) {
		t.Errorf("%s still mounted", p.NetnsPath)
	}
}

func mountedAt(t *testing.T, path string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

func TestReconcileAfterCrash(t *testing.T) {
	testenv.Root(t)
	a, err := Setup(testConfig("c1", 2))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Setup(testConfig("c2", 3))
	if err != nil {
		a.Teardown()
		t.Fatal(err)
	}
	// A second Setup of a pool whose leftovers are still there is refused.
	if _, err := Setup(testConfig("c1", 2)); err == nil || !strings.Contains(err.Error(), "Reconcile") {
		t.Errorf("Setup over leftovers: %v, want an error pointing at Reconcile", err)
	}
	// A half-made pool: a namespace file with no veth.
	half := filepath.Join(NetnsDir, testPrefix+"-c3")
	if err := createNamedNetns(half); err != nil {
		t.Fatal(err)
	}
	// Another prefix's pool is not touched.
	oc := testConfig("o1", 4)
	oc.Prefix = "o" + testPrefix
	other, err := Setup(oc)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Teardown()

	removed, err := Reconcile(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{a.HostIf: true, b.HostIf: true, a.NetnsPath: true, b.NetnsPath: true, half: true}
	if len(removed) != len(want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	for _, r := range removed {
		if !want[r] {
			t.Errorf("removed %s, not a leftover", r)
		}
	}
	assertGone(t, a)
	assertGone(t, b)
	if _, err := os.Lstat(half); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there", half)
	}
	if _, err := netlink.LinkByName(other.HostIf); err != nil {
		t.Errorf("another prefix's veth removed: %v", err)
	}
	if removed, err := Reconcile(testPrefix); err != nil || len(removed) != 0 {
		t.Errorf("second Reconcile: %v, %v; want nothing", removed, err)
	}
	// The pool can be set up again.
	p := setup(t, testConfig("c1", 2))
	_ = p
}

func TestBadConfig(t *testing.T) {
	// Setup refuses each before it creates anything: fixed addresses are safe.
	good := configWith("b1", "10.77.96.1/30", "10.77.96.2/30")
	cases := []struct {
		field string
		mod   func(*Config)
	}{
		{"Pool", func(c *Config) { c.Pool = "" }},
		{"Pool", func(c *Config) { c.Pool = "waytoolongname" }},
		{"Pool", func(c *Config) { c.Pool = "a/b" }},
		{"Prefix", func(c *Config) { c.Prefix = "-x" }},
		{"HostAddr", func(c *Config) { c.HostAddr = "" }},
		{"HostAddr", func(c *Config) { c.HostAddr = "10.77.96.1" }},
		{"HostAddr", func(c *Config) { c.HostAddr = "10.77.96.300/30" }},
		{"HostAddr", func(c *Config) { c.HostAddr = "10.77.96.0/30" }},
		{"HostAddr", func(c *Config) { c.HostAddr = "10.77.96.1/32" }},
		{"PoolAddr", func(c *Config) { c.PoolAddr = "10.77.97.2/30" }},
		{"PoolAddr", func(c *Config) { c.PoolAddr = "10.77.96.1/30" }},
		{"PoolAddr", func(c *Config) { c.PoolAddr = "10.77.96.2/29" }},
		{"Rate", func(c *Config) { c.Rate = 0 }},
		{"Burst", func(c *Config) { c.Burst = 100 }},
		{"Latency", func(c *Config) { c.Latency = 0 }},
		{"Latency", func(c *Config) { c.Rate = 1 << 40; c.Latency = time.Hour }},
	}
	for _, tc := range cases {
		c := good
		tc.mod(&c)
		_, err := Setup(c)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field {
			t.Errorf("%+v: error %v, want a ConfigError on %s", c, err, tc.field)
		}
	}
	if _, err := Reconcile("../x"); err == nil {
		t.Error("Reconcile with a bad prefix: no error")
	}
}

// TestRateLimitTakesEffect sends 2 MB each way through a 1 MB/s limit. Only a
// lower bound: the transfer cannot beat the bucket (burst plus rate times time).
func TestRateLimitTakesEffect(t *testing.T) {
	if testing.Short() {
		t.Skip("transfers 4 MB at 1 MB/s")
	}
	cfg := testConfig("r1", 5)
	p := setup(t, cfg)
	const size = 2 << 20
	minDur := time.Duration(float64(size-int(cfg.Burst)) / float64(cfg.Rate) * 0.9 * float64(time.Second))

	// Out of the pool: the pool sends, the host receives.
	ln, err := net.Listen("tcp", net.JoinHostPort(p.HostAddr.IP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	start := time.Now()
	err = inNetns(t, p, func() error {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(make([]byte, size))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != size {
		t.Fatalf("host received %d bytes, want %d", n, size)
	}
	if d := time.Since(start); d < minDur {
		t.Errorf("out of the pool: %d bytes in %v at %d B/s, faster than the limit allows (%v)", size, d, cfg.Rate, minDur)
	} else {
		t.Logf("out of the pool: %d bytes in %v", size, d)
	}

	// Into the pool: the pool listens, the host sends.
	lnc := make(chan net.Listener, 1)
	err = inNetns(t, p, func() error {
		l, err := net.Listen("tcp", net.JoinHostPort(p.PoolAddr.IP.String(), "0"))
		lnc <- l
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	pl := <-lnc
	defer pl.Close()
	go func() {
		c, err := pl.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	start = time.Now()
	c, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := <-got; n != size {
		t.Fatalf("pool received %d bytes, want %d", n, size)
	}
	if d := time.Since(start); d < minDur {
		t.Errorf("into the pool: %d bytes in %v at %d B/s, faster than the limit allows (%v)", size, d, cfg.Rate, minDur)
	} else {
		t.Logf("into the pool: %d bytes in %v", size, d)
	}
}
