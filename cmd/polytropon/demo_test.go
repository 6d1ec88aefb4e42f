package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
)

// TestDemoStepsParse checks that every step of the demo names a registered command
// and flags it accepts, so that the demo cannot drift from the commands it runs.
// The steps themselves are tested in their own packages; `make demo` runs them all.
func TestDemoStepsParse(t *testing.T) {
	// The main job comes first: the same operations through the three paths.
	if args := demoSteps[0].args(t.TempDir(), false); len(args) < 2 || args[0] != "perf" || args[1] != "paths" {
		t.Fatalf("first demo step is %q, want perf paths", strings.Join(args, " "))
	}
	for _, short := range []bool{false, true} {
		for _, s := range demoSteps {
			args := s.args(t.TempDir(), short)
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

// TestDemoJudgeCopy checks how the copy goal is decided from perf copy's
// cells: one failing cell refutes it, cells too noisy to tell leave it
// undecided, and only every cell holding makes it hold.
func TestDemoJudgeCopy(t *testing.T) {
	report := func(verdicts ...string) []byte {
		var cells []string
		for i, v := range verdicts {
			cells = append(cells, fmt.Sprintf(`{"setting":"priv->shared/warm","bytes":%d,"kernel":"copy","paired":{"median":0.97},"verdict":%q}`, 64<<i, v))
		}
		return []byte(`{"result":{"reps":6},"tuned_speedups":[` + strings.Join(cells, ",") + `]}`)
	}
	for _, tc := range []struct {
		verdicts []string
		want     string
	}{
		{[]string{"holds", "holds"}, "held"},
		{[]string{"holds", "unclear"}, "undecided"},
		{[]string{"unclear", "fails"}, "NOT held"},
	} {
		cs, _, err := judgeCopy(report(tc.verdicts...))
		if err != nil || len(cs) != 1 || cs[0].verdict() != tc.want {
			t.Errorf("%v: %+v, %v; want one claim %s", tc.verdicts, cs, err, tc.want)
		}
	}
	if _, _, err := judgeCopy([]byte(`{"result":{"reps":6}}`)); !errors.Is(err, errMissing) {
		t.Errorf("a report without cells: %v, want errMissing", err)
	}
	if _, _, err := judgePaths([]byte(`{"results":[{"op":"stat","path":"direct","p50_ns":900,"ops_per_sec":1e6}]}`)); !errors.Is(err, errMissing) {
		t.Errorf("a paths report without FUSE: %v, want errMissing", err)
	}
}

// TestDemoBounds: a figure exactly at its bound meets the goal.
func TestDemoBounds(t *testing.T) {
	if c := atMost("x", 2, 2, "%.2f"); !c.held {
		t.Errorf("2 <= 2 not held: %+v", c)
	}
	if c := atLeast("x", 0.95, 0.95, "%.2fx"); !c.held {
		t.Errorf("0.95 >= 0.95 not held: %+v", c)
	}
	if c := atLeast("x", 0.9499, 0.95, "%.2fx"); c.held {
		t.Errorf("0.9499 >= 0.95 held: %+v", c)
	}
}

// TestDemoRoundTripNote: the IPC step's note names the hardware's floor when
// perf ipc measured it, and reads as before when it did not.
func TestDemoRoundTripNote(t *testing.T) {
	queue := `"queue":[{"kind":"rcqb","producers":2,"consumers":2,"ops_per_sec":2},{"kind":"vyukov","producers":2,"consumers":2,"ops_per_sec":1},` +
		`{"kind":"rcqb-spsc","producers":1,"consumers":1,"ops_per_sec":4},{"kind":"chan","producers":1,"consumers":1,"ops_per_sec":1}]`
	for _, tc := range []struct {
		rows, want string
	}{
		{`{"path":"cache-line","p50_ns":800},{"path":"direct-spin","p50_ns":820},{"path":"unix","p50_ns":35000}`,
			"direct path (service spinning) 820ns, Unix socket 35µs, one cache line between two cores 800ns (the hardware's floor) (no goal)"},
		{`{"path":"direct-spin","p50_ns":820},{"path":"unix","p50_ns":35000}`,
			"direct path (service spinning) 820ns, Unix socket 35µs (no goal)"},
	} {
		claims, notes, err := judgeIPC([]byte(`{` + queue + `,"round_trip":[` + tc.rows + `]}`))
		if err != nil {
			t.Fatal(err)
		}
		if len(claims) != 2 || len(notes) != 1 || !strings.HasSuffix(notes[0], tc.want) {
			t.Errorf("claims %v, notes %q; want a note ending %q", claims, notes, tc.want)
		}
	}
}
