package pool

import (
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/service"
)

const goodPool = `
run_dir: /run/ptest
pools:
  - name: a
    cpus: "0"
    memory: 64MiB
    pids: 100
    uid: 1000
    gid: 1000
    workers: 1
    filesystems:
      - name: data
        stack: [{memfs: {}}]
`

func TestParseConfigGood(t *testing.T) {
	c, err := ParseConfig([]byte(goodPool))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pools[0]
	if c.Cgroup != DefaultCgroup || p.StateDir != "/run/ptest/a" || p.Socket() != "/run/ptest/a/service.sock" {
		t.Fatalf("defaults: cgroup %q state_dir %q", c.Cgroup, p.StateDir)
	}
	if h := c.Health; h.Interval != DefaultHealthInterval || h.Timeout != DefaultHealthTimeout || h.Failures != DefaultHealthFailures || h.Bound() != 17*time.Second ||
		h.StuckAfter != time.Minute || h.StuckBound() != 70*time.Second {
		t.Fatalf("health defaults %+v, bound %v, stuck bound %v", h, h.Bound(), h.StuckBound())
	}
	if err := c.CheckUsers(); err != nil {
		t.Fatal(err)
	}
	data, err := p.ServiceConfig()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := service.ParseConfig(data)
	if err != nil {
		t.Fatalf("generated service config %s: %v", data, err)
	}
	if sc.Socket != p.Socket() || len(sc.CPUs) != 1 || sc.CPUs[0] != 0 || len(sc.AllowUIDs) != 1 || sc.AllowUIDs[0] != 1000 ||
		len(sc.Filesystems) != 1 || sc.Filesystems[0].Stack[0].Kind != "memfs" {
		t.Fatalf("generated service config: %+v", sc)
	}
}

func TestParseConfigErrorsNameKeys(t *testing.T) {
	fs := "\n    filesystems: [{name: d, stack: [{memfs: {}}]}]"
	pool0 := "pools:\n  - name: a" + fs + "\n"
	for _, tc := range []struct{ yaml, want string }{
		{"pools: []", "pools: at least one"},
		{"bogus: 1\n" + pool0, "field bogus not found"},
		{"pools:\n  - name: a\n    colour: red" + fs, "field colour not found"},
		{"pools:\n  - cpus: \"0\"" + fs, "pools[0].name: required"},
		{"pools:\n  - name: \"../x\"" + fs, "pools[0].name:"},
		{pool0 + "  - name: a" + fs, `pools[1].name: "a" used twice`},
		{pool0 + "  - name: b\n    cpus: \"7\"" + fs, "pools[1].cpus: CPU 7 does not exist (this machine has 0-"},
		{pool0 + "  - name: b\n    cpus: \"1-0\"" + fs, "pools[1].cpus:"},
		{pool0 + "  - name: b\n    cpus: \"x\"" + fs, "pools[1].cpus:"},
		{"pools:\n  - name: a\n    memory: 1KiB" + fs, "pools[0].memory:"},
		{"pools:\n  - name: a\n    memory: lots" + fs, "bad size"},
		{"pools:\n  - name: a\n    pids: -1" + fs, "pools[0].pids:"},
		{"pools:\n  - name: a\n    io: {read_bps: 1MiB}" + fs, "pools[0].io.device: required"},
		{"pools:\n  - name: a\n    io: {device: /etc/passwd, read_bps: 1MiB}" + fs, "pools[0].io.device: \"/etc/passwd\" is not a block device"},
		{"pools:\n  - name: a\n    io: {device: /nonexistent, read_bps: 1MiB}" + fs, "pools[0].io.device:"},
		{"pools:\n  - name: a\n    state_dir: rel" + fs, "pools[0].state_dir:"},
		{"run_dir: rel\n" + pool0, "run_dir:"},
		{"cgroup: a/b\n" + pool0, "cgroup:"},
		{"pools:\n  - name: a\n    workers: 1000" + fs, "pools[0].workers:"},
		{"pools:\n  - name: a", "pools[0].filesystems: at least one"},
		{"pools:\n  - name: a\n    filesystems: [{name: d, stack: [{memfs: {}}], colour: 1}]", "field colour not found"},
		{"pools:\n  - name: a\n    filesystems: [{stack: [{memfs: {}}]}]", "pools[0].filesystems[0].name: required"},
		{pool0 + "  - name: b\n    state_dir: /run/polytropon/a" + fs, "pools[1].state_dir:"},
		// Networks: interface names derive from the pool's name (pt-NAME-h, 15
		// bytes at most).
		{"pools:\n  - name: elevenbytes\n    network: {address: 10.9.0.2/30, host_address: 10.9.0.1/30, rate: 1MB}" + fs, `pools[0].name: "elevenbytes" too long: the host interface "pt-elevenbytes-h" is 16 bytes, Linux allows 15`},
		{"pools:\n  - name: a\n    network: {address: x, host_address: 10.9.0.1/30, rate: 1MB}" + fs, "pools[0].network.address:"},
		{"pools:\n  - name: a\n    network: {address: 10.9.0.2/30, host_address: 10.9.1.1/30, rate: 1MB}" + fs, "pools[0].network.address: 10.9.0.2/30 is not in HostAddr's subnet"},
		{"pools:\n  - name: a\n    network: {address: 10.9.0.2/30, host_address: 10.9.0.1/30}" + fs, "pools[0].network.rate:"},
		{"pools:\n  - name: a\n    network: {address: 10.9.0.2/30, host_address: 10.9.0.1/30, rate: 1MB, burst: 100}" + fs, "pools[0].network.burst:"},
		{"pools:\n  - name: a\n    network: {address: 10.9.0.2/30, host_address: 10.9.0.1/30, rate: 1MB, latency: soon}" + fs, "line 3: cannot unmarshal !!str `soon` into time.Duration"},
		{"pools:\n  - name: a\n    network: {colour: red}" + fs, "field colour not found"},
		{"health: {failures: -1}\n" + pool0, "health.failures:"},
		{"health: {interval: 1ms}\n" + pool0, "health.interval:"},
		{"health: {stuck_after: 500ms}\n" + pool0, "health.stuck_after:"},
		{"health: {timeout: 1ms}\n" + pool0, "health.timeout:"},
		{"health: {colour: red}\n" + pool0, "field colour not found"},
		{"pools:\n  - name: a\n    network: {address: 10.9.0.2/30, host_address: 10.9.0.1/30, rate: 1MB}" + fs +
			"\n  - name: b\n    network: {address: 10.9.0.3/29, host_address: 10.9.0.4/29, rate: 1MB}" + fs, `pools[1].network.host_address: subnet 10.9.0.0/29 overlaps pool "a"'s 10.9.0.0/30`},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.yaml, err, tc.want)
		}
	}
}

// TestCheckUsers: serve refuses a pool whose service would run as root.
func TestCheckUsers(t *testing.T) {
	fs := "\n    filesystems: [{name: d, stack: [{memfs: {}}]}]"
	for _, tc := range []struct{ yaml, want string }{
		{"pools:\n  - name: a" + fs, "pools[0].uid: required and not 0"},
		{"pools:\n  - name: a\n    uid: 5" + fs, "pools[0].gid: required and not 0"},
		{"pools:\n  - name: a\n    uid: 5\n    gid: 5" + fs + "\n  - name: b\n    gid: 6" + fs, "pools[1].uid: required and not 0"},
		{"pools:\n  - name: a\n    uid: 5\n    gid: 5" + fs, ""},
	} {
		c, err := ParseConfig([]byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		err = c.CheckUsers()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := Serve(Config{Pools: []Pool{{Name: "a"}}}, Options{}, nil); err == nil || !strings.Contains(err.Error(), "pools[0].uid") {
		t.Errorf("Serve of a pool without a user: %v", err)
	}
}

func TestCPUList(t *testing.T) {
	for in, want := range map[string]string{"0": "0", "0-1,3": "0-1,3", "3,0-1,1": "0-1,3", " 2 , 4-6": "2,4-6"} {
		l, err := ParseCPUList(in)
		if err != nil || FormatCPUList(l) != want {
			t.Errorf("%q: %v %v, want %s", in, l, err, want)
		}
	}
	for _, bad := range []string{"", "a", "1-", "-1", "2-1", "1,,2", "0-100000"} {
		if _, err := ParseCPUList(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
