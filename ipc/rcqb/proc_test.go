package rcqb

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The cross-process tests re-execute the test binary as helper processes: with
// helperEnv set, TestMain runs one helper role on the queue passed as fd 3
// instead of the tests.
const helperEnv = "RCQB_TEST_HELPER"

var soak = flag.Bool("rcqb.soak", false, "run the long soak tests")

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role))
	}
	os.Exit(m.Run())
}

func envInt(name string) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: %s: %v\n", name, err)
		os.Exit(2)
	}
	return n
}

// runHelper runs one role; its exit status tells the parent whether it worked.
func runHelper(role string) int {
	var st unix.Stat_t
	if err := unix.Fstat(3, &st); err != nil {
		fmt.Fprintln(os.Stderr, "helper: fstat fd 3:", err)
		return 2
	}
	mem, err := unix.Mmap(3, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: mmap:", err)
		return 2
	}
	q, err := Attach(mem, WithStallTimeout(time.Duration(envInt("RCQB_STALL_MS"))*time.Millisecond),
		WithSpin(envInt("RCQB_SPIN")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: attach:", err)
		return 2
	}
	switch role {
	case "produce":
		id, n := uint64(envInt("RCQB_ID")), envInt("RCQB_N")
		for i := 0; i < n; i++ {
			if err := q.Enqueue(id<<32 | uint64(i)); err != nil {
				fmt.Fprintf(os.Stderr, "helper: producer %d value %d: %v\n", id, i, err)
				return 1
			}
		}
		return 0
	case "consume":
		// Values go to stdout as 8 little-endian bytes each. Unbuffered (one
		// write per value) when the parent may kill us, so that the parent sees
		// every value we took except at most the one in flight.
		var w io.Writer = os.Stdout
		bw := bufio.NewWriter(os.Stdout)
		if os.Getenv("RCQB_UNBUFFERED") == "" {
			w = bw
		}
		var b [8]byte
		for {
			v, err := q.Dequeue()
			if errors.Is(err, ErrClosed) {
				break
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "helper: consumer:", err)
				return 1
			}
			binary.LittleEndian.PutUint64(b[:], v)
			if _, err := w.Write(b[:]); err != nil {
				return 1
			}
		}
		if err := bw.Flush(); err != nil {
			return 1
		}
		return 0
	case "dequeue-once":
		v, err := q.Dequeue()
		if errors.Is(err, ErrClosed) {
			fmt.Print("closed")
			return 0
		}
		fmt.Printf("value %d err %v", v, err)
		return 0
	case "enqueue-once":
		if err := q.Enqueue(42); errors.Is(err, ErrClosed) {
			fmt.Print("closed")
		} else {
			fmt.Printf("err %v", err)
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "helper: unknown role", role)
	return 2
}

// sharedQueue makes a queue in a memfd mapped MAP_SHARED and returns the file to
// hand to helpers.
func sharedQueue(t *testing.T, capacity int, opts ...Option) (*Queue, *os.File) {
	t.Helper()
	fd, err := unix.MemfdCreate("rcqb-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd_create: %v", err)
	}
	f := os.NewFile(uintptr(fd), "rcqb-memfd")
	t.Cleanup(func() { f.Close() })
	size, err := Size(capacity)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	q, err := Init(mem, capacity, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return q, f
}

type helper struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	mu     sync.Mutex
	out    []byte
	done   chan struct{} // closed when stdout reached EOF
}

func (h *helper) output() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]byte(nil), h.out...)
}

func (h *helper) wait(t *testing.T) error {
	t.Helper()
	<-h.done
	err := h.cmd.Wait()
	if h.stderr.Len() > 0 {
		t.Logf("helper %s stderr: %s", h.cmd.Env[len(h.cmd.Env)-1], h.stderr.String())
	}
	return err
}

// startHelper starts the test binary in role on the queue in f.
func startHelper(t *testing.T, f *os.File, role string, stall time.Duration, spin int, env ...string) *helper {
	t.Helper()
	h := &helper{done: make(chan struct{})}
	h.cmd = exec.Command(os.Args[0], "-test.run=^$")
	h.cmd.Env = append(os.Environ(), env...)
	h.cmd.Env = append(h.cmd.Env, fmt.Sprintf("RCQB_STALL_MS=%d", stall.Milliseconds()),
		fmt.Sprintf("RCQB_SPIN=%d", spin), helperEnv+"="+role)
	h.cmd.ExtraFiles = []*os.File{f}
	h.cmd.Stderr = &h.stderr
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(h.done)
		buf := make([]byte, 4096)
		for {
			n, err := stdout.Read(buf)
			h.mu.Lock()
			h.out = append(h.out, buf[:n]...)
			h.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		if h.cmd.ProcessState == nil {
			h.cmd.Process.Kill()
			h.cmd.Wait()
		}
	})
	return h
}

func decodeValues(t *testing.T, b []byte) []uint64 {
	t.Helper()
	if len(b)%8 != 0 {
		t.Fatalf("consumer output of %d bytes is not whole values", len(b))
	}
	vs := make([]uint64, len(b)/8)
	for i := range vs {
		vs[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return vs
}

// waitSleepers waits until n sleepers are registered on the queue's slots.
func waitSleepers(t *testing.T, q *Queue, n uint32) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d sleepers", n), func() bool {
		s := uint32(0)
		for i := 0; i < q.Cap(); i++ {
			s += q.waitersAt(uint64(i))
		}
		return s == n
	})
}

func TestCrossProcessMPMC(t *testing.T) {
	per := 5000
	if testing.Short() {
		per = 500
	}
	for _, spin := range []int{0, DefaultSpin} {
		t.Run(fmt.Sprintf("spin=%d", spin), func(t *testing.T) {
			q, f := sharedQueue(t, 8, WithStallTimeout(0))
			const producers, consumers = 2, 2
			var prods, cons []*helper
			for c := 0; c < consumers; c++ {
				cons = append(cons, startHelper(t, f, "consume", 0, spin))
			}
			for p := 0; p < producers; p++ {
				prods = append(prods, startHelper(t, f, "produce", 0, spin,
					fmt.Sprintf("RCQB_ID=%d", p), fmt.Sprintf("RCQB_N=%d", per)))
			}
			// The parent consumes too, through its own handle on the mapping.
			var mine []uint64
			parentDone := make(chan struct{})
			go func() {
				defer close(parentDone)
				for {
					v, err := q.Dequeue()
					if err != nil {
						return
					}
					mine = append(mine, v)
				}
			}()
			for _, h := range prods {
				if err := h.wait(t); err != nil {
					t.Fatalf("producer: %v", err)
				}
			}
			q.Close()
			streams := [][]uint64{}
			for _, h := range cons {
				if err := h.wait(t); err != nil {
					t.Fatalf("consumer: %v", err)
				}
				streams = append(streams, decodeValues(t, h.output()))
			}
			<-parentDone
			streams = append(streams, mine)
			checkStreams(t, streams, producers, per, 0)
		})
	}
}

func TestCrossProcessCloseWakesSleepers(t *testing.T) {
	t.Run("dequeuers", func(t *testing.T) {
		q, f := sharedQueue(t, 4)
		hs := []*helper{startHelper(t, f, "dequeue-once", time.Second, 0), startHelper(t, f, "dequeue-once", time.Second, 0)}
		waitSleepers(t, q, 2)
		q.Close()
		for _, h := range hs {
			if err := h.wait(t); err != nil {
				t.Fatal(err)
			}
			if got := string(h.output()); got != "closed" {
				t.Fatalf("sleeping dequeuer in another process: %q, want closed", got)
			}
		}
	})
	t.Run("enqueuers", func(t *testing.T) {
		q, f := sharedQueue(t, 4)
		for i := uint64(0); i < 4; i++ {
			if err := q.Enqueue(i); err != nil {
				t.Fatal(err)
			}
		}
		hs := []*helper{startHelper(t, f, "enqueue-once", time.Second, 0), startHelper(t, f, "enqueue-once", time.Second, 0)}
		waitSleepers(t, q, 2)
		q.Close()
		for _, h := range hs {
			if err := h.wait(t); err != nil {
				t.Fatal(err)
			}
			if got := string(h.output()); got != "closed" {
				t.Fatalf("sleeping enqueuer in another process: %q, want closed", got)
			}
		}
		for i := uint64(0); i < 4; i++ {
			if v, err := q.Dequeue(); err != nil || v != i {
				t.Fatalf("drain: %d, %v", v, err)
			}
		}
		if _, err := q.Dequeue(); !errors.Is(err, ErrClosed) {
			t.Fatalf("after drain: %v", err)
		}
	})
}

// TestCrossProcessConsumerKilled SIGKILLs consumer processes in the middle of a
// run. The guarantee checked: each killed consumer costs at most one value (the
// one it held a ticket for or had taken but not yet reported); nothing is
// duplicated; FIFO per producer-consumer pair holds; the producers and the other
// consumers finish (stall reclaim repairs the dead consumers' slots).
func TestCrossProcessConsumerKilled(t *testing.T) {
	per := 4000
	if testing.Short() {
		per = 1000
	}
	const stall = 250 * time.Millisecond
	q, f := sharedQueue(t, 16, WithStallTimeout(stall))
	const producers, consumers, killed = 2, 4, 2
	var cons, prods []*helper
	for c := 0; c < consumers; c++ {
		cons = append(cons, startHelper(t, f, "consume", stall, DefaultSpin, "RCQB_UNBUFFERED=1"))
	}
	for p := 0; p < producers; p++ {
		prods = append(prods, startHelper(t, f, "produce", stall, DefaultSpin,
			fmt.Sprintf("RCQB_ID=%d", p), fmt.Sprintf("RCQB_N=%d", per)))
	}
	for k := 0; k < killed; k++ {
		h := cons[k]
		target := (k + 1) * per / 8 * 8 / consumers
		waitFor(t, "the consumer to take some values", func() bool {
			n := len(h.output())
			return n >= target || prods[0].cmd.ProcessState != nil
		})
		if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := h.wait(t); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("killed consumer exited with %v", err)
		}
	}
	for _, h := range prods {
		if err := h.wait(t); err != nil {
			t.Fatalf("producer: %v", err)
		}
	}
	q.Close()
	var streams [][]uint64
	for i, h := range cons {
		if i >= killed {
			if err := h.wait(t); err != nil {
				t.Fatalf("surviving consumer: %v", err)
			}
		}
		streams = append(streams, decodeValues(t, h.output()))
	}
	lost := checkStreams(t, streams, producers, per, killed)
	t.Logf("%d consumers killed, %d values lost", killed, lost)
}

// TestCrossProcessProducerKilled SIGKILLs a producer process while it enqueues
// (most likely asleep on the full queue with a ticket). The others lose nothing
// and nobody hangs.
func TestCrossProcessProducerKilled(t *testing.T) {
	per := 3000
	if testing.Short() {
		per = 600
	}
	const stall = 250 * time.Millisecond
	q, f := sharedQueue(t, 8, WithStallTimeout(stall))
	const producers = 3
	var prods []*helper
	for p := 0; p < producers; p++ {
		prods = append(prods, startHelper(t, f, "produce", stall, DefaultSpin,
			fmt.Sprintf("RCQB_ID=%d", p), fmt.Sprintf("RCQB_N=%d", per)))
	}
	var got []uint64
	consumed := make(chan struct{})
	var mu sync.Mutex
	go func() {
		defer close(consumed)
		for {
			v, err := q.Dequeue()
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, v)
			mu.Unlock()
			if len(got)%64 == 0 {
				time.Sleep(100 * time.Microsecond) // keep the queue full at times
			}
		}
	}()
	waitFor(t, "some values", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > per/4 })
	prods[0].cmd.Process.Signal(syscall.SIGKILL)
	prods[0].wait(t)
	for _, h := range prods[1:] {
		if err := h.wait(t); err != nil {
			t.Fatalf("surviving producer: %v", err)
		}
	}
	q.Close()
	<-consumed
	seen := map[uint64]bool{}
	last := []int{-1, -1, -1}
	for _, v := range got {
		if seen[v] {
			t.Fatalf("%#x received twice", v)
		}
		seen[v] = true
		p, i := int(v>>32), int(v&0xffffffff)
		if p >= producers || i >= per || i <= last[p] {
			t.Fatalf("unexpected or out-of-order value %#x", v)
		}
		last[p] = i
	}
	for p := 1; p < producers; p++ {
		for i := 0; i < per; i++ {
			if !seen[uint64(p)<<32|uint64(i)] {
				t.Fatalf("surviving producer %d's value %d lost", p, i)
			}
		}
	}
	t.Logf("killed producer delivered %d values before dying", last[0]+1)
}

// TestSoak runs long mixed workloads; enable with -rcqb.soak.
func TestSoak(t *testing.T) {
	if !*soak {
		t.Skip("soak test: run with -rcqb.soak")
	}
	deadline := time.Now().Add(2 * time.Minute)
	for round := 0; time.Now().Before(deadline); round++ {
		p, c := 1+round%5, 1+round%3
		q := mustNew(t, 2<<(round%4), WithSpin(round%4*100), WithLayout(Layout(1+round%2)))
		runMPMC(t, q, p, c, 50000/p)
		if round%3 == 0 {
			// SPSC mode, both protocols, with Close at a random point.
			t.Run(fmt.Sprintf("spsc-%d", round), TestSPSCCloseRace)
			q := mustNew(t, 2<<(round%4), WithSPSC(), WithSpin(round%4*100))
			q.fenced = q.fenced && round%2 == 0
			runMPMC(t, q, 1, 1, 50000)
		}
		if round%4 == 0 {
			t.Run(fmt.Sprintf("xproc-%d", round), TestCrossProcessMPMC)
			t.Run(fmt.Sprintf("kill-%d", round), TestCrossProcessConsumerKilled)
		}
	}
}
