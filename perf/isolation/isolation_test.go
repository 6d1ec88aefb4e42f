package isolation

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/perf/results"
)

// TestNoisy: the noisy tenant says it writes, writes and fsyncs until told to
// stop, then reports its totals and removes its file.
func TestNoisy(t *testing.T) {
	dir := t.TempDir()
	pr, pw := io.Pipe()
	stop := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() {
		done <- Noisy(NoisyOptions{Dir: dir, BlockBytes: 4096, SyncEvery: 2, FileBlocks: 4}, pw, stop)
		pw.Close()
	}()
	r := bufio.NewReader(pr)
	line, err := r.ReadString('\n')
	if err != nil || line != noisyReady+"\n" {
		t.Fatalf("first line %q (%v)", line, err)
	}
	// Stop once the file wrapped around at least once: 4 blocks written.
	for {
		st, err := os.Stat(filepath.Join(dir, "noise"))
		if err == nil && st.Size() == 4*4096 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("the noisy tenant stopped on its own: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	stop <- os.Interrupt
	var st NoisyStats
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st.Bytes < 4*4096 || st.Bytes%4096 != 0 || st.Fsyncs < 2 || st.Fsyncs != st.Bytes/4096/2 || st.Seconds <= 0 {
		t.Fatalf("stats %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "noise")); !os.IsNotExist(err) {
		t.Fatalf("noise file left: %v", err)
	}
}

func TestNoisyBadOptions(t *testing.T) {
	for _, o := range []NoisyOptions{
		{BlockBytes: 4096, SyncEvery: 1},
		{Dir: t.TempDir(), BlockBytes: 100, SyncEvery: 1},
		{Dir: t.TempDir(), BlockBytes: 4096},
		{Dir: t.TempDir(), BlockBytes: 4096, SyncEvery: 1, FileBlocks: -1},
		{Dir: filepath.Join(t.TempDir(), "missing"), BlockBytes: 4096, SyncEvery: 1},
	} {
		if err := Noisy(o, io.Discard, nil); err == nil {
			t.Errorf("Noisy(%+v) succeeded", o)
		}
	}
}

func TestRunBadOptions(t *testing.T) {
	good := Options{Out: t.TempDir(), Rounds: 1, BlockBytes: 4096, SyncEvery: 1}
	for _, c := range []struct {
		change func(*Options)
		want   string
	}{
		{func(o *Options) { o.Rounds = 0 }, "0 rounds"},
		{func(o *Options) { o.Rounds = MaxRounds + 1 }, "rounds"},
		{func(o *Options) { o.BlockBytes = 100 }, "blocks of 100 bytes"},
		{func(o *Options) { o.SyncEvery = 0 }, "fsync every 0"},
		{func(o *Options) {}, "are required"},
	} {
		o := good
		c.change(&o)
		_, err := Run(t.Context(), o)
		if os.Geteuid() != 0 {
			c.want = "needs root"
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one saying %q", err, c.want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	rep := &Report{Machine: results.Machine{CPU: "Test CPU", Cores: 2}, QuietCPU: 1, NoisyCPU: 0, Pools: "t0 on CPU 1, t1 on CPU 0",
		OutputDir: "/out", Rows: []Row{
			{Path: "kernel", Neighbour: "none", Round: 1, Summary: results.Summary{P50: 1000, P99: 2000, OpsPerSec: 5e5}},
			{Path: "kernel", Neighbour: "noisy", Round: 1, Summary: results.Summary{P50: 1500, P99: 5000, OpsPerSec: 4e5},
				Noisy: &NoisyStats{Bytes: 200e6, Fsyncs: 10, Seconds: 2}},
			{Path: "direct", Neighbour: "none", Round: 1, Error: "boom"},
		}}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Test CPU, 2 cores", "P99 vs ALONE", "2.50x", "100", "error: boom", "report: /out/isolation.json"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}
