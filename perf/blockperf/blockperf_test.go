package blockperf

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/testenv"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4k": 4096, "4K": 4096, "64KiB": 64 << 10, "1m": 1 << 20, "1G": 1 << 30, "2gb": 2 << 30} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "k", "-4k", "0", "4x", "1.5k", "99999999999t"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
}

// TestParseFio parses a report fio 3.33 wrote for FioArgs-style options (see
// testdata); the expected figures were read from that file by hand.
func TestParseFio(t *testing.T) {
	out, err := os.ReadFile("testdata/fio-randread-qd4.json")
	if err != nil {
		t.Fatal(err)
	}
	out = append([]byte("fio: a notice before the JSON\n"), out...)
	r, err := ParseFio(out, Config{RW: RandRead, BlockSize: 4096, QueueDepth: 4})
	if err != nil {
		t.Fatal(err)
	}
	near := func(name string, got, want float64) {
		if math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("IOPS", r.IOPS, 34810.379242)
	near("IOs", float64(r.IOs), 17440)
	near("P50us", r.P50us, 85.504)
	near("P99us", r.P99us, 692.224)
	near("P999us", r.P999us, 4014.080)
	near("CPUPerIOus", r.CPUPerIOus, (7.4+51.8)/100*0.5/17440*1e6)
	if _, err := ParseFio([]byte("no json here"), Config{}); err == nil {
		t.Fatal("ParseFio of garbage succeeded")
	}
	if _, err := ParseFio([]byte(`{"jobs":[]}`), Config{}); err == nil {
		t.Fatal("ParseFio of no jobs succeeded")
	}
}

func TestFioArgsMatchConfig(t *testing.T) {
	args := strings.Join(FioArgs(Config{Path: "/x", RW: RandWrite, BlockSize: 8192, QueueDepth: 7, Duration: 1500 * time.Millisecond}, 1<<20), " ")
	for _, want := range []string{"--filename=/x", "--ioengine=io_uring", "--direct=1", "--rw=randwrite", "--bs=8192", "--iodepth=7", "--runtime=1500ms", "--size=1048576"} {
		if !strings.Contains(args, want) {
			t.Errorf("fio args lack %s: %s", want, args)
		}
	}
}

func TestRunShort(t *testing.T) {
	testenv.IOUring(t)
	dir, err := os.MkdirTemp("/var/tmp", "blockperf-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "dev")
	for _, rw := range []string{RandRead, RandWrite, Read, Write} {
		r, err := Run(Config{Path: path, RW: rw, BlockSize: 4096, QueueDepth: 8, Duration: 50 * time.Millisecond, Size: 4 << 20})
		if err != nil {
			t.Fatalf("%s: %v", rw, err)
		}
		if r.IOs == 0 || r.IOPS <= 0 || r.P50us <= 0 || r.P50us > r.P999us || !r.Direct {
			t.Fatalf("%s: implausible result %+v", rw, r)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Size() != 4<<20 {
		t.Fatalf("file not created at --size: %v %v", st, err)
	}
	if _, err := Run(Config{Path: path, RW: "randtrim", BlockSize: 4096, QueueDepth: 1, Duration: time.Millisecond}); err == nil || !strings.Contains(err.Error(), "randread") {
		t.Fatalf("bad rw: %v", err)
	}
	if _, err := Run(Config{Path: path, RW: RandRead, BlockSize: 1000, QueueDepth: 1, Duration: time.Millisecond}); err == nil {
		t.Fatal("bs 1000 accepted")
	}
	if _, err := Run(Config{Path: filepath.Join(dir, "missing"), RW: RandRead, BlockSize: 4096, QueueDepth: 1, Duration: time.Millisecond}); err == nil || !strings.Contains(err.Error(), "--size") {
		t.Fatalf("missing file without size: %v", err)
	}
}

func TestOpenDeviceNVMeNames(t *testing.T) {
	_, _, err := OpenDevice(Config{Path: "nvme:0000:00:1f.7"})
	if err == nil || !strings.Contains(err.Error(), "polytropon nvme bind 0000:00:1f.7") {
		t.Fatalf("nvme: of a controller not bound to vfio-pci: %v", err)
	}
	if _, _, err := OpenDevice(Config{Path: "/dev/ng97n3"}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing /dev/ngXnY: %v", err)
	}
	if _, err := RunFio(Config{Path: "nvme:0000:00:1f.7", RW: RandRead, BlockSize: 4096, QueueDepth: 1, Duration: time.Second}); err == nil {
		t.Fatal("fio accepted a VFIO controller")
	}
	args := strings.Join(FioArgs(Config{Path: "/dev/ng0n1", RW: RandRead, BlockSize: 4096, QueueDepth: 8, Duration: time.Second}, 1<<20), " ")
	if !strings.Contains(args, "--ioengine=io_uring_cmd --cmd_type=nvme") || strings.Contains(args, "--direct") {
		t.Fatalf("fio on a generic NVMe device: %s", args)
	}
}

// TestSweep: every depth measured repeat times in order, and the table names
// each; bad sweeps fail before anything runs.
func TestSweep(t *testing.T) {
	testenv.IOUring(t)
	dir, err := os.MkdirTemp("/var/tmp", "blockperf-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := Config{Path: filepath.Join(dir, "dev"), RW: RandRead, BlockSize: 4096, Duration: 20 * time.Millisecond, Size: 2 << 20}
	for _, bad := range []struct {
		depths []int
		repeat int
	}{{nil, 1}, {[]int{1}, 0}, {[]int{1}, maxRepeat + 1}} {
		if _, err := Sweep(cfg, bad.depths, bad.repeat, false); err == nil {
			t.Errorf("Sweep(%v, %d) succeeded", bad.depths, bad.repeat)
		}
	}
	if _, err := os.Stat(cfg.Path); !os.IsNotExist(err) {
		t.Fatalf("a refused sweep made the file: %v", err)
	}
	rep, err := Sweep(cfg, []int{1, 4}, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 4 || len(rep.Ratios) != 0 {
		t.Fatalf("%d results, %d ratios; want 4 and 0", len(rep.Results), len(rep.Ratios))
	}
	for i, want := range []int{1, 1, 4, 4} {
		if r := rep.Results[i]; r.QueueDepth != want || r.IOs == 0 || r.Engine != "polytropon" {
			t.Fatalf("result %d: %+v, want qd %d", i, r, want)
		}
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "polytropon") != 4 || strings.Contains(b.String(), "ours / fio") {
		t.Fatalf("table:\n%s", b.String())
	}
}
