package main

import (
	"strings"
	"testing"
)

func TestPerfPathsBadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"perf", "paths", "--ops", "stat,fsync"}, "valid: stat, read4k, write4k, open-close, create-unlink, pebble-put"},
		{[]string{"perf", "paths", "--paths", "kernel,nfs"}, "valid: kernel, fuse, fuse-uncached, direct"},
		{[]string{"perf", "paths", "--duration", "-1s"}, "negative"},
		{[]string{"perf", "paths", "--pebble-keys", "-1"}, "negative"},
	} {
		_, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.args, err, c.want)
		}
	}
}

// TestPerfPathsKernelOnly runs the command for real on the one path that needs no
// service (the others are tested in package pathperf, which runs the service).
func TestPerfPathsKernelOnly(t *testing.T) {
	out, err := runCLI(t, "perf", "paths", "--paths", "kernel", "--ops", "read4k,stat", "--duration", "1ms",
		"--iterations", "10", "--dir", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "kernel p50") || !strings.Contains(out, "read4k") || strings.Contains(out, "direct") {
		t.Fatalf("table:\n%s", out)
	}
}
