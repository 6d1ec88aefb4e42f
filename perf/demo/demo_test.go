package demo

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

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
		if err != nil || len(cs) != 1 || cs[0].Verdict() != tc.want {
			t.Errorf("%v: %+v, %v; want one claim %s", tc.verdicts, cs, err, tc.want)
		}
	}
	if _, _, err := judgeCopy([]byte(`{"result":{"reps":6}}`)); !errors.Is(err, ErrMissing) {
		t.Errorf("a report without cells: %v, want ErrMissing", err)
	}
	if _, _, err := judgePaths([]byte(`{"results":[{"op":"stat","path":"direct","p50_ns":900,"ops_per_sec":1e6}]}`)); !errors.Is(err, ErrMissing) {
		t.Errorf("a paths report without FUSE: %v, want ErrMissing", err)
	}
}

// TestDemoBounds: a figure exactly at its bound meets the goal.
func TestDemoBounds(t *testing.T) {
	if c := atMost("x", 2, 2, "%.2f"); !c.Held {
		t.Errorf("2 <= 2 not held: %+v", c)
	}
	if c := atLeast("x", 0.95, 0.95, "%.2fx"); !c.Held {
		t.Errorf("0.95 >= 0.95 not held: %+v", c)
	}
	if c := atLeast("x", 0.9499, 0.95, "%.2fx"); c.Held {
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
