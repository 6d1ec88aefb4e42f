package back

import (
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/front"
)

// TestDialSleepsWhenSharingOneCPU: a client with default waiting that can run
// only on the one CPU its service is confined to sleeps at once instead of
// polling (polling there holds the CPU the answer needs); with two CPUs, or
// with spinning configured, it polls as before.
func TestDialSleepsWhenSharingOneCPU(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	cpu := -1
	for i := 0; i < 1024 && cpu < 0; i++ {
		if all.IsSet(i) {
			cpu = i
		}
	}
	// The service starts from this thread with only cpu allowed: a child
	// inherits the forking thread's mask.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &all)
	sock := filepath.Join(t.TempDir(), "svc.sock")
	h := startHelper(t, "service", sockEnv+"="+sock)
	var clients []*front.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
		h.stdin.Close()
		if err := h.cmd.Wait(); err != nil {
			t.Errorf("service helper: %v\n%s", err, h.stderr.String())
		}
	}()
	h.expect(t, readyLine)

	dialHere := func(cfg front.Config) *front.Client {
		t.Helper()
		cfg.SocketPath = sock
		c, err := front.Dial(cfg)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		if err := c.Nop(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := dialHere(front.Config{}); !c.SleepsAtOnce() {
		t.Error("client and service on one CPU: the default client still spins")
	}
	if c := dialHere(front.Config{SpinIters: 100}); c.SleepsAtOnce() {
		t.Error("explicit SpinIters overridden")
	}
	if all.Count() < 2 {
		return
	}
	if err := unix.SchedSetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	if c := dialHere(front.Config{}); c.SleepsAtOnce() {
		t.Errorf("client free to run on %d CPUs sleeps at once", all.Count())
	}
}
