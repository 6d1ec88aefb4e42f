package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
)

func TestPerfBlockdevBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"perf", "blockdev"},
		{"perf", "blockdev", "--dev", "/nonexistent", "--qd", "0"},
		{"perf", "blockdev", "--dev", "/nonexistent", "--bs", "4q"},
		{"perf", "blockdev", "--dev", "/nonexistent", "--repeat", "0"},
	} {
		if _, err := runCLI(t, args...); err == nil {
			t.Errorf("%v succeeded", args)
		}
	}
}

func TestPerfBlockdevJSON(t *testing.T) {
	testenv.IOUring(t)
	dir, err := os.MkdirTemp("/var/tmp", "perf-blockdev-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	out, err := runCLI(t, "perf", "blockdev", "--dev", filepath.Join(dir, "f"), "--size", "2m", "--qd", "1,4", "--duration", "30ms", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, `"engine": "polytropon"`) != 2 {
		t.Fatalf("want two results:\n%s", out)
	}
}
