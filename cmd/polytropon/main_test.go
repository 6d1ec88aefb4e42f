package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := runCLI(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "go: "+runtime.Version()) || !strings.Contains(out, "commit: ") {
		t.Fatalf("version output lacks go version or commit:\n%s", out)
	}
}

func TestCompletion(t *testing.T) {
	out, err := runCLI(t, "completion", "bash")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "__start_polytropon") {
		t.Fatalf("bash completion script looks wrong:\n%.200s", out)
	}
}

func TestBadLogFlags(t *testing.T) {
	if _, err := runCLI(t, "--log-format", "xml", "version"); err == nil {
		t.Fatal("--log-format xml accepted")
	}
	if _, err := runCLI(t, "--log-level", "loud", "version"); err == nil {
		t.Fatal("--log-level loud accepted")
	}
}

// TestNoEmptyCommands walks the whole tree: every command either runs something or
// groups subcommands, so --help never lists a command that does nothing.
func TestNoEmptyCommands(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Run == nil && c.RunE == nil && !c.HasAvailableSubCommands() {
			t.Errorf("command %q neither runs nor has subcommands", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRoot())
}
