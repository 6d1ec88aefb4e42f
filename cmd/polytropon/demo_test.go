package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/perf/demo"
)

// TestDemoStepsParse checks that every step of the demo names a registered command
// and flags it accepts, so that the demo cannot drift from the commands it runs.
// The steps themselves are tested in their own packages; `make demo` runs them all.
func TestDemoStepsParse(t *testing.T) {
	// The main job comes first: the same operations through the three paths.
	if args := demo.Steps[0].Args(t.TempDir(), false); len(args) < 2 || args[0] != "perf" || args[1] != "paths" {
		t.Fatalf("first demo step is %q, want perf paths", strings.Join(args, " "))
	}
	for _, short := range []bool{false, true} {
		for _, s := range demo.Steps {
			args := s.Args(t.TempDir(), short)
			root := newRoot()
			cmd, rest, err := root.Find(args)
			if err != nil {
				t.Fatalf("demo step %q: %v", strings.Join(args, " "), err)
			}
			if cmd == root || (cmd.Run == nil && cmd.RunE == nil) {
				t.Fatalf("demo step %q does not reach a runnable command", strings.Join(args, " "))
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Fatalf("demo step %q: %v", strings.Join(args, " "), err)
			}
		}
	}
}

// TestDemoShort runs the whole demo with short measurements and checks its
// verdict: every goal judged from the commands' real reports (a report whose
// JSON drifted fails the step instead of judging a zero), and one overall
// sentence at the end. It asserts nothing about the figures themselves.
func TestDemoShort(t *testing.T) {
	testenv.Root(t)
	testenv.FUSE(t)
	testenv.IOUring(t)
	if _, err := exec.LookPath("fio"); err != nil {
		testenv.SkipOrFail(t, "the demo's block device step runs fio (Debian package fio, `make deps`): "+err.Error())
	}
	dir, err := os.MkdirTemp("/var/tmp", "polytropon-demo-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	out, err := runCLI(t, "demo", "--short", "--dir", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	i := strings.Index(out, "=== Verdict")
	if i < 0 {
		t.Fatalf("the demo printed no verdict:\n%s", out)
	}
	verdict := out[i:]
	lines := strings.Split(strings.TrimSpace(verdict), "\n")
	var judged int
	for _, l := range lines[1:] {
		l = strings.TrimSpace(l)
		if l == "" {
			break
		}
		if !strings.HasPrefix(l, "held ") && !strings.HasPrefix(l, "NOT held ") && !strings.HasPrefix(l, "undecided ") {
			t.Errorf("verdict line without a verdict: %q", l)
		}
		judged++
	}
	if judged != 11 {
		t.Errorf("%d goals judged, want 11:\n%s", judged, verdict)
	}
	if !regexp.MustCompile(`(?m)^Overall: \d+ of 11 goals held in this run`).MatchString(verdict) {
		t.Errorf("no overall sentence:\n%s", verdict)
	}
	if strings.Contains(out, "needs >= 6 reps") {
		t.Errorf("the demo prints cells that cannot be judged:\n%s", out)
	}
	// The reports stay in --dir, one per judged step.
	if reports, _ := filepath.Glob(filepath.Join(dir, "step*.json")); len(reports) != 5 {
		t.Errorf("reports in --dir: %v, want 5", reports)
	}
}
