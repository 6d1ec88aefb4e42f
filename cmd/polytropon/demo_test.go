package main

import (
	"strings"
	"testing"
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
