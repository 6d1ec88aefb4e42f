package tenantpool

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/pool"
)

// poolExecEnv makes the test binary, started again, do what `polytropon
// pool-exec --cgroup-procs F... -- ARGV` does: enter the cgroups through
// package pool, then exec ARGV.
const poolExecEnv = "POLYTROPON_TENANTPOOL_TEST_POOL_EXEC"

func TestMain(m *testing.M) {
	if os.Getenv(poolExecEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "pool-exec" {
		var procs []string
		args := os.Args[2:]
		for len(args) >= 2 && args[0] == "--cgroup-procs" {
			procs, args = append(procs, args[1]), args[2:]
		}
		if len(args) == 0 || args[0] != "--" {
			fmt.Fprintln(os.Stderr, "pool-exec: bad arguments", os.Args)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, pool.EnterAndExec(procs, "", args[1:]))
		os.Exit(1)
	}
	os.Setenv(poolExecEnv, "1") // for the children only: this process is past the check
	os.Exit(m.Run())
}

// shLauncher is an inner launcher whose service and worker are shell commands
// that print where they run.
type shLauncher struct{}

func (shLauncher) Service(tenant int, cfg string) *exec.Cmd {
	c := exec.Command("/bin/sh", "-c", `echo "service $0 $TENANT $(pwd)"; cat /proc/self/cgroup`, cfg)
	c.Env = append(os.Environ(), fmt.Sprintf("TENANT=%d", tenant))
	c.Dir = "/"
	return c
}

func (shLauncher) Worker(tenant int) *exec.Cmd {
	return exec.Command("/bin/sh", "-c", "echo worker; cat /proc/self/cgroup")
}

// TestLauncher: what the launcher starts runs inside the tenant's pool, on
// the tenant's CPU only, from its first instruction; the inner launcher's
// commands keep their arguments, environment and directory; Close removes the
// pools.
func TestLauncher(t *testing.T) {
	testenv.Root(t)
	testenv.Cpusets(t, false) // creates cpusets: not beside an exclusive one
	parent := fmt.Sprintf("polytropon-perftest-%d", os.Getpid())
	pl, err := New(os.Args[0], parent, nil, shLauncher{})
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	for tenant := 0; tenant < 3; tenant++ {
		cmd := pl.Command(tenant, "/bin/sh", "-c", "cat /proc/self/cgroup; grep Cpus_allowed_list /proc/self/status")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tenant %d: %v\n%s", tenant, err, out)
		}
		pool := fmt.Sprintf("%s/t%d", parent, tenant)
		if !strings.Contains(string(out), pool) {
			t.Fatalf("tenant %d not in its pool %s:\n%s", tenant, pool, out)
		}
		if !strings.Contains(string(out), fmt.Sprintf("Cpus_allowed_list:\t%d\n", pl.CPU(tenant))) {
			t.Fatalf("tenant %d not confined to CPU %d:\n%s", tenant, pl.CPU(tenant), out)
		}
	}
	for _, c := range []struct {
		cmd        *exec.Cmd
		want, pool string
	}{{pl.Service(1, "svc.yaml"), "service svc.yaml 1 /\n", parent + "/t1"}, {pl.Worker(2), "worker\n", parent + "/t2"}} {
		out, err := c.cmd.CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), c.want) || !strings.Contains(string(out), c.pool) {
			t.Fatalf("%v: %v\n%s", c.cmd.Args, err, out)
		}
	}
	if err := pl.Err(); err != nil {
		t.Fatal(err)
	}
	if d := pl.Describe(4); !strings.Contains(d, "t0 on CPU") || !strings.Contains(d, "one pool per tenant") {
		t.Fatalf("Describe: %s", d)
	}
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/cpuset", parent)); !os.IsNotExist(err) {
		t.Fatalf("pools left after Close: %v", err)
	}
}
