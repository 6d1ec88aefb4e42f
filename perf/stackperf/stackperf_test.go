package stackperf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunMeasuresEveryOpOnBothPaths(t *testing.T) {
	dir := t.TempDir()
	res, err := Run(Config{Dir: dir, Duration: 20 * time.Millisecond, MaxOpsPerOp: 2000, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(Ops)*len(Paths) {
		t.Fatalf("got %d results, want %d", len(res), len(Ops)*len(Paths))
	}
	for i, r := range res {
		if r.Op != Ops[i/len(Paths)] || r.Path != Paths[i%len(Paths)] {
			t.Errorf("result %d is %s/%s, out of order", i, r.Op, r.Path)
		}
		if r.Ops <= 0 || r.Ops > 2000 || r.P50Ns <= 0 || r.P99Ns < r.P50Ns || r.OpsPerSec <= 0 {
			t.Errorf("%s/%s: implausible result %+v", r.Op, r.Path, r)
		}
	}
	// The stack's create+unlink went through the union into the upper branch, and the
	// write-back cache flushed on Close: nothing is left behind, and the image branch
	// is untouched.
	if _, err := os.Stat(filepath.Join(dir, "upper", "tmp.dat")); !os.IsNotExist(err) {
		t.Errorf("tmp.dat left in the upper branch: %v", err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "lower"))
	if err != nil || len(ents) != 1 {
		t.Errorf("lower branch changed: %v %v", ents, err)
	}
	var b strings.Builder
	if err := WriteTable(&b, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"p50 vs kernel", "create+unlink", "stack", "1.00x"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := Run(Config{Duration: time.Second}); err == nil {
		t.Error("no directory accepted")
	}
	if _, err := Run(Config{Dir: t.TempDir()}); err == nil {
		t.Error("zero duration accepted")
	}
}
