package testenv

import (
	"testing"
)

func TestRequiredParsesEnv(t *testing.T) {
	for _, c := range []struct {
		val  string
		want bool
	}{{"", false}, {"0", false}, {"1", true}, {"yes", true}} {
		t.Setenv(RequireEnv, c.val)
		if got := Required(); got != c.want {
			t.Errorf("Required() with %q = %v, want %v", c.val, got, c.want)
		}
	}
}

// recorder captures what SkipOrFail does without ending the real test.
type recorder struct {
	testing.TB
	failed, skipped bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Skip(...any)           { r.skipped = true }

func TestSkipOrFail(t *testing.T) {
	t.Setenv(RequireEnv, "1")
	r := &recorder{TB: t}
	SkipOrFail(r, "no widget")
	if !r.failed || r.skipped {
		t.Fatalf("required: failed=%v skipped=%v, want a failure", r.failed, r.skipped)
	}
	t.Setenv(RequireEnv, "")
	r = &recorder{TB: t}
	SkipOrFail(r, "no widget")
	if r.failed || !r.skipped {
		t.Fatalf("not required: failed=%v skipped=%v, want a skip", r.failed, r.skipped)
	}
}

func TestIOUringProbeOnThisMachine(t *testing.T) {
	IOUring(t)
}
