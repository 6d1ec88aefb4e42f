package invariants

import (
	"strings"
	"testing"
)

func TestCheckPanicsWithMessage(t *testing.T) {
	defer func() {
		r := recover()
		s, ok := r.(string)
		if !ok || !strings.Contains(s, "invariant violated: slot 7 in state 3") {
			t.Fatalf("recover() = %v, want the formatted invariant message", r)
		}
	}()
	Check(false, "slot %d in state %d", 7, 3)
	t.Fatal("Check(false) returned")
}

func TestCheckTrueDoesNothing(t *testing.T) {
	Check(true, "never")
}
