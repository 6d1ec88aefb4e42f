package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/ipc/memcopy"
	"github.com/polytropon/polytropon/ipc/memcopy/tune"
)

// TestTuneAndPerfCopy runs `tune copy --quick` for real (reader child and
// all), then `perf copy --json` on the profile it wrote.
func TestTuneAndPerfCopy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.json")
	out, err := runCLI(t, "tune", "copy", "--quick", "--reps", "1", "--show", "--out", path)
	if err != nil {
		t.Fatalf("tune copy: %v\n%s", err, out)
	}
	if !strings.Contains(out, "choice per size class") {
		t.Errorf("--show printed no choice table:\n%s", out)
	}
	p, err := memcopy.LoadProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := memcopy.NewCopier(p); err != nil {
		t.Fatalf("profile just tuned is refused: %v", err)
	}
	// stdout alone: the log lines go to stderr.
	root := newRoot()
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"perf", "copy", "--quick", "--reps", "1", "--json", "--profile", path})
	if err := root.Execute(); err != nil {
		t.Fatalf("perf copy: %v\n%s", err, stderr.String())
	}
	out = stdout.String()
	var rep tune.Comparison
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("perf copy --json: %v\n%.500s", err, out)
	}
	if len(rep.Speedups) == 0 || !(rep.Worst > 0) {
		t.Fatalf("perf copy reported no tuned speedups: %+v", rep.Speedups)
	}

	// Six rounds bound each cell's paired median at 95 %: every cell gets an
	// interval around its median and a verdict that agrees with it.
	root = newRoot()
	stdout.Reset()
	stderr.Reset()
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"perf", "copy", "--sizes", "4096,65536", "--reps", "6", "--json", "--profile", path})
	if err := root.Execute(); err != nil {
		t.Fatalf("perf copy --sizes: %v\n%s", err, stderr.String())
	}
	out = stdout.String()
	rep = tune.Comparison{}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("perf copy --json: %v\n%.500s", err, out)
	}
	if len(rep.Speedups) != 2*len(tune.Settings) {
		t.Fatalf("%d tuned cells, want 2 sizes x %d settings", len(rep.Speedups), len(tune.Settings))
	}
	for _, s := range rep.Speedups {
		p := s.Paired
		if p == nil || p.N != 6 || !(p.Lo <= p.Median && p.Median <= p.Hi) || s.Verdict != p.Verdict(tune.GoalBound) {
			t.Errorf("cell %s %d: paired %+v verdict %s", s.Setting, s.Bytes, p, s.Verdict)
		}
	}
}

func TestPerfCopyBadProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "perf", "copy", "--profile", path); err == nil || !strings.Contains(err.Error(), "bad copy profile") {
		t.Fatalf("corrupt profile: error %v", err)
	}
}
