// Package ipcperf measures the direct path's transport for `polytropon perf ipc`:
// (a) in-process queue throughput, RCQB (and at 1P1C its SPSC mode) against a
// buffered channel, a mutex ring and a Vyukov queue (package
// perf/ipcperf/throughput, which holds those baselines); (b) the cross-process
// round trip of an empty request over the direct path (service spinning,
// service sleeping) against a Unix-socket request/response and a pipe, with a
// peer process started by re-executing the running binary (PeerCommand, which
// must end in RunPeer); (c) the hardware's floor for any such round trip: one
// cache line written by one core and answered by another (PathCacheLine),
// measured right before the direct path, since a VM's cross-core latency can
// change several-fold with where its virtual CPUs land on the host.
//
// It is measurement code, not a test: it asserts nothing and reports medians, p99s
// and rates (HdrHistogram) measured in one run, so that ratios compare like with
// like. Every peer it starts is stopped before Run returns.
//
// Lock order: the package holds no locks.
//
// Measure: `polytropon perf ipc` (WriteTable's table; --json for the Report).
package ipcperf

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/ipc/back"
	"github.com/polytropon/polytropon/ipc/front"
	"github.com/polytropon/polytropon/ipc/wire"
	"github.com/polytropon/polytropon/perf/ipcperf/throughput"
)

// Peer modes, passed to the peer process.
const (
	PeerDirectSpin  = "direct-spin"
	PeerDirectSleep = "direct-sleep"
	PeerUnix        = "unix"
	PeerPipe        = "pipe"

	// PathCacheLine is the in-process row: two threads on two different CPUs
	// pass one cache line back and forth. No cross-core protocol can answer in
	// less, so direct-spin over it says how far the direct path is from the
	// hardware.
	PathCacheLine = "cache-line"
)

// Options of a run.
type Options struct {
	// RoundTrips per path (default 200000).
	RoundTrips int
	// QueueOps values per throughput measurement (default 2000000).
	QueueOps int
	// PeerCommand starts the peer: PeerCommand(mode, socket) returns the command;
	// its stdout must print "ready" once listening. The pipe peer reads requests
	// from fd 3 and answers on fd 4.
	PeerCommand func(mode, socket string) *exec.Cmd
}

// QueueRow is one throughput measurement.
type QueueRow struct {
	Kind      string  `json:"kind"`
	Producers int     `json:"producers"`
	Consumers int     `json:"consumers"`
	OpsPerSec float64 `json:"ops_per_sec"`
}

// RoundTripRow is one round-trip measurement.
type RoundTripRow struct {
	Path      string  `json:"path"`
	N         int64   `json:"n"`
	P50Ns     int64   `json:"p50_ns"`
	P99Ns     int64   `json:"p99_ns"`
	OpsPerSec float64 `json:"ops_per_sec"`
}

// Report is a whole run.
type Report struct {
	Date      string         `json:"date"`
	Queue     []QueueRow     `json:"queue"`
	RoundTrip []RoundTripRow `json:"round_trip"`
}

// QueueRatio returns the throughput of kind a over that of kind b with p
// producers and c consumers in this run, or 0 if either is missing.
func (r *Report) QueueRatio(a, b string, p, c int) float64 {
	var x, y float64
	for _, q := range r.Queue {
		if q.Producers != p || q.Consumers != c {
			continue
		}
		switch q.Kind {
		case a:
			x = q.OpsPerSec
		case b:
			y = q.OpsPerSec
		}
	}
	if x == 0 || y == 0 {
		return 0
	}
	return x / y
}

// Run measures everything in opts.
func Run(opts Options) (*Report, error) {
	if opts.RoundTrips <= 0 {
		opts.RoundTrips = 200000
	}
	if opts.QueueOps <= 0 {
		opts.QueueOps = 2000000
	}
	if opts.PeerCommand == nil {
		return nil, fmt.Errorf("ipcperf: Options.PeerCommand is required")
	}
	r := &Report{Date: time.Now().UTC().Format(time.RFC3339)}
	for _, pc := range [][2]int{{1, 1}, {2, 2}, {4, 4}} {
		for _, kind := range []string{throughput.KindRCQB, throughput.KindRCQBSPSC, throughput.KindChannel, throughput.KindMutexRing, throughput.KindVyukov} {
			if !throughput.Fits(kind, pc[0], pc[1]) {
				continue
			}
			ops, err := throughput.Measure(kind, pc[0], pc[1], opts.QueueOps)
			if err != nil {
				return nil, fmt.Errorf("ipcperf: %s %dP%dC: %w", kind, pc[0], pc[1], err)
			}
			r.Queue = append(r.Queue, QueueRow{Kind: kind, Producers: pc[0], Consumers: pc[1], OpsPerSec: ops})
		}
	}
	dir, err := os.MkdirTemp("", "polytropon-perf-ipc")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if row, ok := cacheLineRoundTrips(opts.RoundTrips); ok {
		r.RoundTrip = append(r.RoundTrip, row)
	}
	for _, mode := range []string{PeerDirectSpin, PeerDirectSleep, PeerUnix, PeerPipe} {
		row, err := roundTrips(opts, mode, filepath.Join(dir, mode+".sock"))
		if err != nil {
			return nil, fmt.Errorf("ipcperf: %s: %w", mode, err)
		}
		r.RoundTrip = append(r.RoundTrip, row)
	}
	return r, nil
}

// WriteTable prints the queue throughput and round-trip tables, then the
// ratios the goals are stated in: RCQB and its SPSC mode over a channel at
// 1P1C, RCQB over Vyukov's queue at 2P2C, and a Unix socket's p50 round trip
// over the direct path's (service spinning).
func WriteTable(out io.Writer, rep *Report) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "queue\tP\tC\tMops/s\t")
	for _, q := range rep.Queue {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t\n", q.Kind, q.Producers, q.Consumers, q.OpsPerSec/1e6)
	}
	fmt.Fprintln(tw, "\t\t\t\t")
	fmt.Fprintln(tw, "round trip\tp50\tp99\tops/s\t")
	for _, r := range rep.RoundTrip {
		fmt.Fprintf(tw, "%s\t%v\t%v\t%.0f\t\n", r.Path, time.Duration(r.P50Ns), time.Duration(r.P99Ns), r.OpsPerSec)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var spin, unix, line int64
	for _, r := range rep.RoundTrip {
		switch r.Path {
		case PeerDirectSpin:
			spin = r.P50Ns
		case PeerUnix:
			unix = r.P50Ns
		case PathCacheLine:
			line = r.P50Ns
		}
	}
	_, err := fmt.Fprintf(out, "\n1P1C: rcqb / chan = %.2fx, rcqb-spsc / chan = %.2fx; 2P2C: rcqb / vyukov = %.2fx\n",
		rep.QueueRatio(throughput.KindRCQB, throughput.KindChannel, 1, 1),
		rep.QueueRatio(throughput.KindRCQBSPSC, throughput.KindChannel, 1, 1),
		rep.QueueRatio(throughput.KindRCQB, throughput.KindVyukov, 2, 2))
	if err == nil && spin > 0 {
		_, err = fmt.Fprintf(out, "unix-socket p50 / direct (spinning) p50 = %.1fx (%s)\n", float64(unix)/float64(spin), rep.Date)
	}
	if err == nil && spin > 0 && line > 0 {
		_, err = fmt.Fprintf(out, "direct (spinning) p50 / cache-line p50 = %.2fx (near 1x: at the hardware's floor)\n", float64(spin)/float64(line))
	}
	return err
}

// cacheLineRoundTrips measures PathCacheLine on the first two CPUs this process
// may run on; ok is false where it may run on only one.
func cacheLineRoundTrips(n int) (RoundTripRow, bool) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return RoundTripRow{}, false
	}
	var cpus []int
	for c := 0; c < len(set)*64 && len(cpus) < 2; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	// Two goroutines spinning need two Ps: with one, each poll would wait for
	// a preemption.
	if len(cpus) < 2 || runtime.GOMAXPROCS(0) < 2 {
		return RoundTripRow{}, false
	}
	// Each word on its own cache line, so that a round trip moves exactly the
	// two lines a request and its answer would.
	var ping, pong struct {
		v atomic.Uint64
		_ [56]byte
	}
	total := uint64(n + min(n/10, 10000))
	warm := total - uint64(n)
	answered := make(chan error, 1)
	go func() {
		// The thread dies with its goroutine (locked, never unlocked), so its
		// affinity goes with it. It answers every value even unpinned, so the
		// other side never waits forever.
		runtime.LockOSThread()
		var s unix.CPUSet
		s.Set(cpus[1])
		err := unix.SchedSetaffinity(0, &s)
		for i := uint64(1); i <= total; i++ {
			for ping.v.Load() != i {
			}
			pong.v.Store(i)
		}
		answered <- err
	}()
	row := func() (RoundTripRow, error) {
		// This thread goes back to the scheduler afterwards, so it gets its
		// affinity back first.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var old unix.CPUSet
		err := unix.SchedGetaffinity(0, &old)
		if err == nil {
			var s unix.CPUSet
			s.Set(cpus[0])
			err = unix.SchedSetaffinity(0, &s)
			defer unix.SchedSetaffinity(0, &old)
		}
		h := hdrhistogram.New(1, int64(10*time.Second), 3)
		var start time.Time
		for i := uint64(1); i <= total; i++ {
			if i == warm+1 {
				start = time.Now()
			}
			t0 := time.Now()
			ping.v.Store(i)
			for pong.v.Load() != i {
			}
			if i > warm {
				_ = h.RecordValue(int64(time.Since(t0)))
			}
		}
		el := time.Since(start)
		return RoundTripRow{Path: PathCacheLine, N: h.TotalCount(), P50Ns: h.ValueAtQuantile(50), P99Ns: h.ValueAtQuantile(99),
			OpsPerSec: float64(n) / el.Seconds()}, err
	}
	r, err := row()
	if aerr := <-answered; err != nil || aerr != nil {
		return RoundTripRow{}, false
	}
	return r, true
}
func roundTrips(opts Options, mode, sock string) (RoundTripRow, error) {
	cmd := opts.PeerCommand(mode, sock)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return RoundTripRow{}, err
	}
	var toPeer, fromPeer *os.File
	if mode == PeerPipe {
		reqR, reqW, err := os.Pipe()
		if err != nil {
			return RoundTripRow{}, err
		}
		respR, respW, err := os.Pipe()
		if err != nil {
			return RoundTripRow{}, err
		}
		cmd.ExtraFiles = []*os.File{reqR, respW}
		toPeer, fromPeer = reqW, respR
		defer reqR.Close()
		defer respW.Close()
		defer reqW.Close()
		defer respR.Close()
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return RoundTripRow{}, err
	}
	if err := cmd.Start(); err != nil {
		return RoundTripRow{}, err
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		return RoundTripRow{}, fmt.Errorf("peer did not start (%q, %v)", line, err)
	}
	var once func() error
	switch mode {
	case PeerDirectSpin, PeerDirectSleep:
		spin := 1 << 20
		if mode == PeerDirectSleep {
			spin = -1
		}
		c, err := front.Dial(front.Config{SocketPath: sock, SpinIters: spin})
		if err != nil {
			return RoundTripRow{}, err
		}
		defer c.Close()
		once = c.Nop
	case PeerUnix:
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return RoundTripRow{}, err
		}
		defer conn.Close()
		var b [8]byte
		once = func() error {
			if _, err := conn.Write(b[:]); err != nil {
				return err
			}
			_, err := io.ReadFull(conn, b[:])
			return err
		}
	case PeerPipe:
		var b [8]byte
		once = func() error {
			if _, err := toPeer.Write(b[:]); err != nil {
				return err
			}
			_, err := io.ReadFull(fromPeer, b[:])
			return err
		}
	}
	h := hdrhistogram.New(1, int64(10*time.Second), 3)
	for range min(opts.RoundTrips/10, 10000) { // warm-up
		if err := once(); err != nil {
			return RoundTripRow{}, err
		}
	}
	start := time.Now()
	for range opts.RoundTrips {
		t0 := time.Now()
		if err := once(); err != nil {
			return RoundTripRow{}, err
		}
		_ = h.RecordValue(int64(time.Since(t0)))
	}
	el := time.Since(start)
	return RoundTripRow{Path: mode, N: h.TotalCount(), P50Ns: h.ValueAtQuantile(50), P99Ns: h.ValueAtQuantile(99),
		OpsPerSec: float64(opts.RoundTrips) / el.Seconds()}, nil
}

// nopHandler answers every filesystem op ENOSYS: the perf peer measures the
// transport, whose OpNop the service answers itself.
type nopHandler struct{}

func (nopHandler) Handle(*back.ClientCtx, *wire.Desc, []byte) int32 { return -int32(syscall.ENOSYS) }
func (nopHandler) ClientGone(*back.ClientCtx)                       {}

// RunPeer is the peer process: it serves mode on socket (or fds 3 and 4 for the pipe)
// until its stdin closes.
func RunPeer(mode, socket string) error {
	switch mode {
	case PeerDirectSpin, PeerDirectSleep, PeerUnix, PeerPipe:
	default:
		return fmt.Errorf("ipcperf: unknown peer mode %q", mode)
	}
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()
	switch mode {
	case PeerDirectSpin, PeerDirectSleep:
		spin := 1 << 30
		if mode == PeerDirectSleep {
			spin = -1
		}
		s, err := back.Listen(back.Config{SocketPath: socket, Handler: nopHandler{}, SpinBudget: spin})
		if err != nil {
			return err
		}
		fmt.Println("ready")
		<-stop
		return s.Close()
	case PeerUnix:
		ln, err := net.Listen("unix", socket)
		if err != nil {
			return err
		}
		defer ln.Close()
		fmt.Println("ready")
		go func() { <-stop; ln.Close() }()
		for {
			c, err := ln.Accept()
			if err != nil {
				return nil
			}
			go echo(c, c)
		}
	case PeerPipe:
		in, out := os.NewFile(3, "req"), os.NewFile(4, "resp")
		fmt.Println("ready")
		go echo(in, out)
		<-stop
		return nil
	}
	return fmt.Errorf("ipcperf: unknown peer mode %q", mode)
}

func echo(r io.Reader, w io.Writer) {
	var b [8]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return
		}
		if _, err := w.Write(b[:]); err != nil {
			return
		}
	}
}
