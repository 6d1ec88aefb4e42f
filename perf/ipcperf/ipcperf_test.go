package ipcperf

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/perf/ipcperf/throughput"
)

const peerEnv = "POLYTROPON_IPCPERF_TEST_PEER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(peerEnv); mode != "" {
		if err := RunPeer(mode, os.Getenv(peerEnv+"_SOCK")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRunSmall runs the whole measurement with tiny counts: every path's peer starts,
// answers, and the report holds every row. It checks function, not speed.
func TestRunSmall(t *testing.T) {
	rep, err := Run(Options{RoundTrips: 200, QueueOps: 2000, PeerCommand: func(mode, sock string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), peerEnv+"="+mode, peerEnv+"_SOCK="+sock)
		return cmd
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Queue) != 13 {
		t.Fatalf("%d queue rows, want 4 kinds x 3 shapes and rcqb-spsc at 1P1C", len(rep.Queue))
	}
	if r := rep.QueueRatio(throughput.KindRCQBSPSC, throughput.KindChannel, 1, 1); r <= 0 {
		t.Fatalf("rcqb-spsc / chan at 1P1C = %v", r)
	}
	if r := rep.QueueRatio(throughput.KindRCQBSPSC, throughput.KindChannel, 2, 2); r != 0 {
		t.Fatalf("rcqb-spsc / chan at 2P2C = %v, want 0 (not measured)", r)
	}
	for _, q := range rep.Queue {
		if q.OpsPerSec <= 0 {
			t.Fatalf("row %+v", q)
		}
	}
	// The cache-line row needs two CPUs to run on; CI machines have them.
	want := 5
	if n, _ := cpusOfThisProcess(); n < 2 || runtime.GOMAXPROCS(0) < 2 {
		want = 4
	}
	if len(rep.RoundTrip) != want {
		t.Fatalf("%d round-trip rows, want %d", len(rep.RoundTrip), want)
	}
	for _, r := range rep.RoundTrip {
		if r.N != 200 || r.P50Ns <= 0 || r.P99Ns < r.P50Ns || r.OpsPerSec <= 0 {
			t.Fatalf("row %+v", r)
		}
	}
	var b strings.Builder
	if err := WriteTable(&b, rep); err != nil {
		t.Fatal(err)
	}
	lines := []string{"rcqb-spsc", "vyukov", "direct-spin", "pipe", "1P1C: rcqb / chan = ", "unix-socket p50 / direct (spinning) p50 = "}
	if want == 5 {
		lines = append(lines, "cache-line", "direct (spinning) p50 / cache-line p50 = ")
	}
	for _, line := range lines {
		if !strings.Contains(b.String(), line) {
			t.Errorf("table lacks %q:\n%s", line, b.String())
		}
	}
}

func cpusOfThisProcess() (int, error) {
	var set unix.CPUSet
	err := unix.SchedGetaffinity(0, &set)
	return set.Count(), err
}

func TestRunPeerRejectsUnknownMode(t *testing.T) {
	if err := RunPeer("carrier-pigeon", ""); err == nil {
		t.Fatal("unknown peer mode accepted")
	}
}
