package front_test

import (
	"errors"
	"sync"
	"syscall"
	"testing"

	"github.com/polytropon/polytropon/ipc/back"
	"github.com/polytropon/polytropon/ipc/front"
)

// TestCloseDuringCalls closes a Client while other goroutines call through it:
// every call ends with its answer or ENOTCONN, and nothing faults (Close used
// to unmap the arena under the calls: SIGSEGV).
func TestCloseDuringCalls(t *testing.T) {
	s, _ := service(t, back.Config{Workers: 2})
	for round := 0; round < 50; round++ {
		c := dial(t, s, front.Config{})
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for {
					if err := c.Nop(); err != nil {
						if !errors.Is(err, syscall.ENOTCONN) {
							t.Errorf("call during Close: %v, want ENOTCONN", err)
						}
						return
					}
				}
			}()
		}
		close(start)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
	}
}

// TestCloseWhileAnswerPending closes a Client whose call waits in a handler:
// the call still gets its answer once the handler lets go, and only then does
// the client disconnect.
func TestCloseWhileAnswerPending(t *testing.T) {
	s, g := service(t, back.Config{Workers: 2})
	c := dial(t, s, front.Config{})
	g.hold()
	errc := make(chan error, 1)
	go func() { _, err := c.Stat("/gate"); errc <- err }()
	waitFor(t, "the call to reach the service", func() bool { return c.Submitted() == 1 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Nop(); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("call after Close: %v, want ENOTCONN", err)
	}
	g.release()
	if err := <-errc; err != nil {
		t.Fatalf("call in flight at Close: %v, want its answer", err)
	}
	waitFor(t, "the service to reclaim the client", func() bool { return s.Stats().LiveClients == 0 })
}
