package lint

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
)

// maxTrackedBytes bounds a tracked file outside docs/results: a larger one is
// almost always a build output or a data dump, and stays in every clone's
// history for good (a 46.5 MB build of the binary once made up most of .git).
const maxTrackedBytes = 1 << 20

// largeFilesDir may hold larger files: dated results (compressed reports,
// plots) are kept on purpose.
const largeFilesDir = "docs/results/"

// trackedFileProblems lists what is wrong with the files git tracks in the work
// tree at root: executables that are not scripts (a build output: ELF by its
// magic, or +x without a #! line) and files over maxTrackedBytes outside
// largeFilesDir. Sizes and contents are the work tree's.
func trackedFileProblems(root string) ([]string, error) {
	cmd := exec.Command("git", "-C", root, "ls-files", "-s", "-z")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files in %s: %w: %s", root, err, strings.TrimSpace(stderr.String()))
	}
	var problems []string
	for _, rec := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		if rec == "" {
			continue
		}
		// "MODE OBJECT STAGE\tPATH"
		meta, path, ok := strings.Cut(rec, "\t")
		if !ok {
			return nil, fmt.Errorf("git ls-files: unexpected record %q", rec)
		}
		mode := strings.Fields(meta)[0]
		if mode == "120000" || mode == "160000" { // symlink, submodule
			continue
		}
		f, err := os.Open(filepath.Join(root, path))
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the work tree, not yet committed
		}
		if err != nil {
			return nil, err
		}
		head := make([]byte, 4)
		n, _ := io.ReadFull(f, head)
		head = head[:n]
		st, err := f.Stat()
		f.Close()
		if err != nil {
			return nil, err
		}
		switch {
		case bytes.HasPrefix(head, []byte("\x7fELF")):
			problems = append(problems, fmt.Sprintf("%s is an ELF executable or object: a build output (git rm --cached %s; .gitignore it)", path, path))
		case mode == "100755" && !bytes.HasPrefix(head, []byte("#!")):
			problems = append(problems, fmt.Sprintf("%s is executable (+x) but not a script with a #! line: a build output, or drop the bit (git update-index --chmod=-x %s)", path, path))
		}
		if st.Size() > maxTrackedBytes && !strings.HasPrefix(path, largeFilesDir) {
			problems = append(problems, fmt.Sprintf("%s is %d bytes, over %d outside %s: build outputs and data stay out of the repository", path, st.Size(), maxTrackedBytes, largeFilesDir))
		}
	}
	return problems, nil
}

// gitWorkTree skips (or, in CI, fails) when git or a git checkout is missing:
// the rule is about what the repository holds, which only git can say.
func gitWorkTree(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testenv.SkipOrFail(t, "TestTrackedFiles reads `git ls-files` and git is not installed: "+err.Error())
	}
}

// TestTrackedFiles: the repository holds sources, scripts and dated results,
// never build outputs. A committed binary costs every clone its size forever
// and hides what was built from what was written.
func TestTrackedFiles(t *testing.T) {
	gitWorkTree(t)
	root := repoRoot(t)
	if _, err := os.Stat(filepath.Join(root, ".git")); err != nil {
		testenv.SkipOrFail(t, fmt.Sprintf("%s is not a git checkout (no .git: a source archive?), so there are no tracked files to check", root))
	}
	problems, err := trackedFileProblems(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestTrackedFilesRule runs the rule on a repository made here, so that it is
// known to catch what it is for: an ELF file, a +x file without #!, a large
// file outside docs/results; and to pass a script, a large result and a file
// deleted from the work tree.
func TestTrackedFilesRule(t *testing.T) {
	gitWorkTree(t)
	dir := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	git("init", "-q")
	write := func(name string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("x"), maxTrackedBytes+1)
	write("scripts/run.sh", []byte("#!/bin/sh\necho ok\n"), 0o755)
	write("docs/results/2026-01-01/results.json", big, 0o644)
	write("main.go", []byte("package main\n"), 0o644)
	write("gone.txt", []byte("x"), 0o644)
	write("polytropon", append([]byte("\x7fELF"), make([]byte, 64)...), 0o644)
	write("tool", []byte("binary\x00data"), 0o755)
	write("data/dump.bin", big, 0o644)
	git("add", ".")
	if err := os.Remove(filepath.Join(dir, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	problems, err := trackedFileProblems(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"polytropon is an ELF", "tool is executable", "data/dump.bin is 1048577 bytes"}
	if len(problems) != len(want) {
		t.Errorf("problems %q, want %d: %q", problems, len(want), want)
	}
	for _, w := range want {
		found := false
		for _, p := range problems {
			found = found || strings.HasPrefix(p, w)
		}
		if !found {
			t.Errorf("no problem starting %q in %q", w, problems)
		}
	}
}
