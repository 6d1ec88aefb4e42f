package ipcperf

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

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
	if len(rep.RoundTrip) != 4 {
		t.Fatalf("%d round-trip rows, want 4", len(rep.RoundTrip))
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
	for _, want := range []string{"rcqb-spsc", "vyukov", "direct-spin", "pipe", "1P1C: rcqb / chan = ", "unix-socket p50 / direct (spinning) p50 = "} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestRunPeerRejectsUnknownMode(t *testing.T) {
	if err := RunPeer("carrier-pigeon", ""); err == nil {
		t.Fatal("unknown peer mode accepted")
	}
}
