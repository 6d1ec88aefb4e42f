package service_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/ipc/front"
	"github.com/polytropon/polytropon/libservices"
)

// stoppedService starts a service process and a client with opts, checks the
// client works, then stops the process (SIGSTOP): alive, socket open, answering
// nothing. The process is continued at the end of the test.
func stoppedService(t *testing.T, opts fslib.DialOptions) (*proc, libservices.FS) {
	t.Helper()
	cfg, sock := diskConfig(t, t.TempDir(), "writeback")
	svc := spawn(t, "service", configEnv+"="+cfg)
	svc.expect(t, "ready")
	opts.Socket = sock
	c, err := fslib.DialFS(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cl, ok := c.(libservices.Closer); ok {
			cl.CloseFS()
		}
	})
	var a libservices.Attr
	if err := c.Stat("/data", &a); err != nil {
		t.Fatal(err)
	}
	if err := svc.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.cmd.Process.Signal(syscall.SIGCONT) })
	waitStopped(t, svc.cmd.Process.Pid)
	return svc, c
}

// waitStopped waits until every thread of pid is stopped: kill(2) returns
// before a running thread has taken the signal, and a worker could still answer
// a request meanwhile.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			t.Fatal(err)
		}
		stopped := 0
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			// The state follows the command name, which ends with ") ".
			if i := bytes.LastIndexByte(b, ')'); err == nil && i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
				stopped++
			}
		}
		if stopped == len(tasks) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d threads of process %d stopped after SIGSTOP", stopped, len(tasks), pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestStoppedServiceDefaultTimeout: a client dialled with default options fails
// a call to a stopped service with ETIMEDOUT after the default call timeout
// (ipc/front's DefaultCallTimeout: this test takes that long), not never; once
// the service runs again the same client works.
func TestStoppedServiceDefaultTimeout(t *testing.T) {
	svc, c := stoppedService(t, fslib.DialOptions{})
	start := time.Now()
	res := make(chan error, 1)
	go func() {
		var a libservices.Attr
		res <- c.Stat("/data", &a)
	}()
	select {
	case err := <-res:
		if !errors.Is(err, syscall.ETIMEDOUT) {
			t.Fatalf("call to a stopped service: %v, want ETIMEDOUT", err)
		}
		if el := time.Since(start); el < front.DefaultCallTimeout {
			t.Fatalf("gave up after %v, before the default timeout %v", el, front.DefaultCallTimeout)
		}
	case <-time.After(3 * front.DefaultCallTimeout):
		// Let the call finish before the client is closed under it.
		svc.cmd.Process.Signal(syscall.SIGCONT)
		<-res
		t.Fatalf("a default client waited %v on a stopped service", 3*front.DefaultCallTimeout)
	}
	if err := svc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var a libservices.Attr
	if err := c.Stat("/data", &a); err != nil {
		t.Fatalf("after SIGCONT: %v", err)
	}
}

// TestStoppedServiceWaitForever: CallTimeout < 0 waits (here well past a short
// timeout) and returns the answer once the service runs again.
func TestStoppedServiceWaitForever(t *testing.T) {
	svc, c := stoppedService(t, fslib.DialOptions{CallTimeout: -1, WaitSlice: 10 * time.Millisecond})
	res := make(chan error, 1)
	go func() {
		var a libservices.Attr
		res <- c.Stat("/data", &a)
	}()
	select {
	case err := <-res:
		t.Fatalf("a call without timeout returned %v from a stopped service", err)
	case <-time.After(2 * time.Second):
	}
	if err := svc.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("after SIGCONT: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer after SIGCONT")
	}
}
