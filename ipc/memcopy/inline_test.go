package memcopy

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestCopyInlines: the copy() classes of a profile cost one compare over
// copy() only while Copy and Copier.Copy are inlined into their callers; a
// change that pushes either over the inliner's budget would quietly add a call
// to every small copy on the direct path. The compiler's -m report is the
// only witness, so the test asks it.
func TestCopyInlines(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the package")
	}
	if checkOverlap {
		t.Skip("invariants builds check overlap on the inlined path's behalf: not inlined by design")
	}
	gobin := runtime.GOROOT() + "/bin/go"
	out, err := exec.Command(gobin, "build", "-gcflags=-m", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -gcflags=-m: %v\n%s", err, out)
	}
	for _, want := range []string{"can inline (*Copier).Copy", "can inline Copy"} {
		if !hasLineSuffix(string(out), want) {
			t.Errorf("compiler no longer inlines %q:\n%s", strings.TrimPrefix(want, "can inline "), grepLines(string(out), "copier.go"))
		}
	}
}

func hasLineSuffix(s, suffix string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasSuffix(l, suffix) {
			return true
		}
	}
	return false
}

func grepLines(s, sub string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
