package blockperf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/polytropon/polytropon/drivers/nvme"
)

// ErrNoFio is returned when fio is not installed.
var ErrNoFio = errors.New("blockperf: fio is not installed (Debian/Ubuntu: apt-get install fio)")

// FioArgs returns fio's command line for cfg: the io_uring engine with O_DIRECT,
// registered files and fixed buffers, as Run uses them.
// On an NVMe generic device (/dev/ngXnY) it is fio's io_uring_cmd engine, the same
// passthrough polytropon's queue uses.
func FioArgs(cfg Config, size int64) []string {
	engine := []string{"--ioengine=io_uring", "--direct=1"}
	if genericNVMe.MatchString(cfg.Path) {
		engine = []string{"--ioengine=io_uring_cmd", "--cmd_type=nvme"}
	}
	return append([]string{
		"--name=polytropon-vs-fio",
		"--filename=" + cfg.Path,
	}, append(engine,
		"--rw="+cfg.RW,
		"--bs="+strconv.Itoa(cfg.BlockSize),
		"--iodepth="+strconv.Itoa(cfg.QueueDepth),
		"--size="+strconv.FormatInt(size, 10),
		"--runtime="+strconv.FormatInt(max(cfg.Duration.Milliseconds(), 1), 10)+"ms",
		"--time_based=1",
		"--norandommap=1",
		"--randrepeat=0",
		"--fixedbufs=1",
		"--registerfiles=1",
		"--lat_percentiles=1",
		"--percentile_list=50:99:99.9",
		"--output-format=json",
	)...)
}

// RunFio runs fio with cfg's parameters on the same file and parses its JSON report.
func RunFio(cfg Config) (Result, error) {
	if err := cfg.check(); err != nil {
		return Result{}, err
	}
	bin, err := exec.LookPath("fio")
	if err != nil {
		return Result{}, ErrNoFio
	}
	if strings.HasPrefix(cfg.Path, VFIOPrefix) {
		return Result{}, fmt.Errorf("blockperf: fio cannot drive %s (a controller bound to vfio-pci needs SPDK's fio plugin): drop --vs-fio", cfg.Path)
	}
	size := cfg.Size
	if genericNVMe.MatchString(cfg.Path) && size <= 0 {
		d, err := nvme.OpenPassthrough(cfg.Path)
		if err != nil {
			return Result{}, err
		}
		size = d.Size()
		d.Close()
	} else if err := Prepare(cfg.Path, cfg.Size); err != nil {
		return Result{}, err
	}
	if size <= 0 {
		d, err := sizeOf(cfg.Path)
		if err != nil {
			return Result{}, err
		}
		size = d
	}
	cmd := exec.Command(bin, FioArgs(cfg, size)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Result{}, fmt.Errorf("blockperf: fio: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return ParseFio(out, cfg)
}

type fioReport struct {
	Jobs []struct {
		Error      int     `json:"error"`
		JobRuntime float64 `json:"job_runtime"` // ms
		UsrCPU     float64 `json:"usr_cpu"`     // percent of runtime
		SysCPU     float64 `json:"sys_cpu"`
		Read       fioSide `json:"read"`
		Write      fioSide `json:"write"`
	} `json:"jobs"`
}

type fioSide struct {
	IOPS     float64 `json:"iops"`
	BWBytes  float64 `json:"bw_bytes"`
	TotalIOs int64   `json:"total_ios"`
	LatNs    struct {
		Percentile map[string]float64 `json:"percentile"`
	} `json:"lat_ns"`
}

// ParseFio turns fio's --output-format=json report into a Result. fio may print
// notices before the JSON; they are skipped.
func ParseFio(out []byte, cfg Config) (Result, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return Result{}, fmt.Errorf("blockperf: fio printed no JSON: %.200q", out)
	}
	var rep fioReport
	if err := json.Unmarshal(out[i:], &rep); err != nil {
		return Result{}, fmt.Errorf("blockperf: fio JSON: %w", err)
	}
	if len(rep.Jobs) != 1 {
		return Result{}, fmt.Errorf("blockperf: fio reported %d jobs, want 1", len(rep.Jobs))
	}
	j := rep.Jobs[0]
	if j.Error != 0 {
		return Result{}, fmt.Errorf("blockperf: fio job failed with error %d", j.Error)
	}
	side := j.Read
	if cfg.RW == RandWrite || cfg.RW == Write {
		side = j.Write
	}
	secs := j.JobRuntime / 1e3
	cpu := (j.UsrCPU + j.SysCPU) / 100 * secs
	res := Result{Engine: "fio", RW: cfg.RW, BlockSize: cfg.BlockSize, QueueDepth: cfg.QueueDepth, Direct: true,
		IOs: side.TotalIOs, Seconds: secs, IOPS: side.IOPS, MBps: side.BWBytes / 1e6,
		P50us: side.LatNs.Percentile["50.000000"] / 1e3, P99us: side.LatNs.Percentile["99.000000"] / 1e3,
		P999us:   side.LatNs.Percentile["99.900000"] / 1e3,
		CPUUserS: j.UsrCPU / 100 * secs, CPUSysS: j.SysCPU / 100 * secs, KernelWorkerCPUs: -1}
	if side.TotalIOs == 0 {
		return Result{}, errors.New("blockperf: fio completed no I/O")
	}
	res.CPUPerIOus = cpu / float64(side.TotalIOs) * 1e6
	return res, nil
}

// Ratios compares ours with fio's: IOPS, CPU per I/O and latency percentiles, each
// ours divided by fio's.
type Ratios struct {
	QueueDepth int     `json:"qd"`
	IOPS       float64 `json:"iops"`
	CPUPerIO   float64 `json:"cpu_per_io"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
}

// Compare returns ours/fio ratios.
func Compare(ours, fio Result) Ratios {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	return Ratios{QueueDepth: ours.QueueDepth, IOPS: div(ours.IOPS, fio.IOPS), CPUPerIO: div(ours.CPUPerIOus, fio.CPUPerIOus),
		P50: div(ours.P50us, fio.P50us), P99: div(ours.P99us, fio.P99us)}
}
