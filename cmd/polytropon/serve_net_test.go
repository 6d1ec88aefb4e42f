package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netProbeEnv turns the test binary into a probe run inside a container: it
// prints eth0's addresses, then sends "ping" to the TCP echo server the
// variable names and prints the answer.
const netProbeEnv = "POLYTROPON_NET_PROBE"

func init() {
	addr := os.Getenv(netProbeEnv)
	if addr == "" {
		return
	}
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		fmt.Println("no eth0:", err)
		os.Exit(3)
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		fmt.Println("eth0", a.String())
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(4)
	}
	fmt.Fprintln(c, "ping")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("read:", err)
		os.Exit(5)
	}
	fmt.Print("echo: ", line)
	os.Exit(0)
}

// netRate is the pools' configured rate, read back from the kernel's TBF.
const netRate = 1 << 20

func newNetServeEnv(t *testing.T) (*serveEnv, string, string) {
	// A /30 of our own in 10.213/16: test processes beside us (the other
	// suite, another checkout) run pools too, and two on one subnet would
	// route each other's replies.
	sub := os.Getpid() % 16384
	hostIP := fmt.Sprintf("10.213.%d.%d", sub/64, sub%64*4+1)
	poolIP := fmt.Sprintf("10.213.%d.%d", sub/64, sub%64*4+2)
	e := newServeEnvWith(t, fmt.Sprintf("    network: {address: %s/30, host_address: %s/30, rate: %d}\n", poolIP, hostIP, netRate),
		"    filesystems:\n      - name: data\n        stack: [{memfs: {}}]\n")
	return e, hostIP, poolIP
}

func (e *serveEnv) netNames() (nsPath, hostIf string) {
	return "/run/netns/pt-" + e.pool, "pt-" + e.pool + "-h"
}

// checkNetGone fails unless the pool's namespace and veth are gone.
func checkNetGone(t *testing.T, e *serveEnv, when string) {
	t.Helper()
	nsPath, hostIf := e.netNames()
	if _, err := os.Lstat(nsPath); !os.IsNotExist(err) {
		t.Errorf("%s: namespace %s left (%v)", when, nsPath, err)
	}
	if _, err := netlink.LinkByName(hostIf); err == nil {
		t.Errorf("%s: interface %s left", when, hostIf)
	}
}

func tbfRate(t *testing.T, h *netlink.Handle, ifName string) uint64 {
	t.Helper()
	l, err := h.LinkByName(ifName)
	if err != nil {
		t.Fatalf("%s: %v", ifName, err)
	}
	qs, err := h.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if tbf, ok := q.(*netlink.Tbf); ok {
			return tbf.Rate
		}
	}
	t.Fatalf("no tbf qdisc on %s: %v", ifName, qs)
	return 0
}

func TestServePoolNetwork(t *testing.T) {
	e, hostIP, poolIP := newNetServeEnv(t)
	serve := startServe(t, e)
	nsPath, hostIf := e.netNames()

	// The network exists, rate-limited both ways.
	host, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	if r := tbfRate(t, host, hostIf); r != netRate {
		t.Errorf("tbf on %s: rate %d, want %d", hostIf, r, netRate)
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	inner, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	if r := tbfRate(t, inner, "eth0"); r != netRate {
		t.Errorf("tbf on eth0 in the pool: rate %d, want %d", r, netRate)
	}

	// The service runs in the pool's namespace.
	var nsSt syscall.Stat_t
	if err := syscall.Stat(nsPath, &nsSt); err != nil {
		t.Fatal(err)
	}
	pids := e.servicePids(t)
	if len(pids) != 1 {
		t.Fatalf("pool cgroup holds %v", pids)
	}
	if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pids[0])); l != fmt.Sprintf("net:[%d]", nsSt.Ino) {
		t.Errorf("service's network namespace %s, want the pool's net:[%d]", l, nsSt.Ino)
	}

	// A container sees eth0 with the pool's address and reaches the host end.
	ln, err := net.Listen("tcp", hostIP+":0")
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
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprint(c, line)
			}()
		}
	}()
	// env sets the probe's variable inside the container only (run is this
	// binary too).
	runDir := filepath.Join(e.dir, "run")
	out, stderr, code := runIn(t, "", "--run-dir", runDir, "--pool", e.pool, "--", "env", netProbeEnv+"="+ln.Addr().String(), os.Args[0])
	t.Logf("probe in the container:\n%s", out)
	if code != 0 || !strings.Contains(out, "eth0 "+poolIP+"/30\n") || !strings.Contains(out, "echo: ping\n") {
		t.Errorf("probe in the container: status %d\n%s%s", code, out, stderr)
	}

	// SIGKILL serve: the network stays; the next serve removes and remakes
	// it (Setup refuses leftovers, so its start proves the reconcile).
	if err := serve.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = serve.Wait()
	if _, err := os.Lstat(nsPath); err != nil {
		t.Fatalf("the network went with a SIGKILLed serve: the test would not exercise reconcile: %v", err)
	}
	second := startServe(t, e)
	if r := tbfRate(t, host, hostIf); r != netRate {
		t.Errorf("after reconcile: tbf rate %d", r)
	}
	stopServe(t, e, second)
	checkNetGone(t, e, "after SIGTERM")
}
