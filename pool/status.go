package pool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/pool/elastic"
)

// Report is `polytropon status --pools`: what the serve of a run directory
// reserved for each pool, what the pool uses now, and its service's state.
type Report struct {
	RunDir string `json:"run_dir"`
	// ServeRunning is false when the record is one a killed serve left (the
	// next serve reconciles it); the pools' usage is then what is left.
	ServeRunning  bool         `json:"serve_running"`
	Cgroup        string       `json:"cgroup"`
	CgroupVersion int          `json:"cgroup_version"`
	Pools         []PoolStatus `json:"pools"`
}

// PoolStatus is one pool in a Report.
type PoolStatus struct {
	Name        string       `json:"name"`
	Socket      string       `json:"socket"`
	Reservation Reservation  `json:"reservation"`
	Usage       Usage        `json:"usage"`
	Service     ServiceState `json:"service"`
	// Decisions are the elasticity controller's recent decisions about the
	// pool, newest last; empty while no controller records any.
	Decisions []string `json:"decisions"`
}

// Usage is a pool's cgroup statistics.
type Usage struct {
	CPUNanos    uint64 `json:"cpu_ns"`
	Memory      int64  `json:"memory_bytes"`
	MemoryPeak  int64  `json:"memory_peak_bytes"`
	Tasks       int64  `json:"tasks"`
	Unavailable string `json:"unavailable,omitempty"` // why some statistics are missing
}

// ServiceState is a pool's filesystem service as serve last recorded it, its
// pid checked against the running processes.
type ServiceState struct {
	Pid      int  `json:"pid,omitempty"`
	Running  bool `json:"running"`
	Restarts int  `json:"restarts"`
	// HealthRestarts are the restarts serve forced because the service
	// stopped answering its health checks (included in Restarts);
	// LastUnhealthy is when and why the last one was.
	HealthRestarts int    `json:"health_restarts"`
	LastUnhealthy  string `json:"last_unhealthy,omitempty"`
	// UID and GID are the pool's user, which the service runs as.
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// Status reads the record of the serve of runDir (RunDir/pools.json) and the
// pools' cgroups. It fails when there is no record: no serve ran there, or it
// shut down cleanly.
func Status(runDir string) (*Report, error) {
	data, err := os.ReadFile(filepath.Join(runDir, "pools.json"))
	if err != nil {
		return nil, fmt.Errorf("no serve's record in %s: %w", runDir, err)
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("serve's record of its pools %s: %w", filepath.Join(runDir, "pools.json"), err)
	}
	rep := &Report{RunDir: runDir, ServeRunning: serveRunning(runDir), Cgroup: rec.Cgroup, CgroupVersion: rec.CgroupVersion}
	for _, p := range rec.Pools {
		ps := PoolStatus{
			Name: p.Name, Socket: p.Socket, Reservation: p.Reservation, Decisions: []string{},
			Service: ServiceState{Pid: p.ServicePid, Restarts: p.Restarts, HealthRestarts: p.HealthRestarts,
				LastUnhealthy: p.LastUnhealthy, UID: p.UID, GID: p.GID},
		}
		ps.Service.Running = rep.ServeRunning && p.ServiceUp && p.ServicePid > 0 && unix.Kill(p.ServicePid, 0) == nil
		ps.Usage = usage(p.CgroupProcs)
		// The elastic driver's file exists only for pools with an
		// elasticity block, and only while serve runs.
		if recs, err := elastic.ReadDecisions(runDir, p.Name); err == nil {
			for _, r := range recs {
				ps.Decisions = append(ps.Decisions, formatDecision(r))
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			ps.Decisions = append(ps.Decisions, "unreadable: "+err.Error())
		}
		rep.Pools = append(rep.Pools, ps)
	}
	return rep, nil
}

// formatDecision is one line of a Report's decisions: when, which knob, from
// and to (and what the service applied when it clamped), and why.
func formatDecision(r elastic.Record) string {
	line := fmt.Sprintf("%s %s %d->%d", r.Time.UTC().Format(time.RFC3339), r.Knob, r.From, r.To)
	if r.Applied != r.To && r.Error == "" {
		line += fmt.Sprintf(" (applied %d)", r.Applied)
	}
	line += ": " + r.Reason
	if r.Error != "" {
		line += " [failed: " + r.Error + "]"
	}
	return line
}

// serveRunning reports whether a serve holds runDir's lock.
func serveRunning(runDir string) bool {
	lf, err := os.Open(filepath.Join(runDir, "serve.lock"))
	if err != nil {
		return false
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		_ = unix.Flock(int(lf.Fd()), unix.LOCK_UN)
		return false
	}
	return true
}

// usage reads a pool's statistics from the directories of its cgroup.procs
// files: in v1 each hierarchy has its own (cpuacct, memory, pids), in v2 one
// directory has them all.
func usage(procsFiles []string) Usage {
	var u Usage
	if len(procsFiles) == 0 {
		u.Unavailable = "the pool's cgroups are not created yet"
		return u
	}
	var errs []error
	readInt := func(path string) int64 {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			return 0
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
		return n
	}
	for _, f := range procsFiles {
		dir := filepath.Dir(f)
		rel, err := filepath.Rel(sysfsCgroup, dir)
		if err != nil {
			continue
		}
		switch strings.SplitN(rel, string(filepath.Separator), 2)[0] {
		case "cpuacct", "cpu,cpuacct":
			u.CPUNanos = uint64(readInt(filepath.Join(dir, "cpuacct.usage")))
		case "memory":
			u.Memory = readInt(filepath.Join(dir, "memory.usage_in_bytes"))
			u.MemoryPeak = readInt(filepath.Join(dir, "memory.max_usage_in_bytes"))
		case "pids":
			u.Tasks = readInt(filepath.Join(dir, "pids.current"))
		case "cpuset", "blkio":
		default: // v2: the unified hierarchy
			if b, err := os.ReadFile(filepath.Join(dir, "cpu.stat")); err == nil {
				for _, l := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
						n, _ := strconv.ParseUint(v, 10, 64)
						u.CPUNanos = n * 1000
					}
				}
			} else {
				errs = append(errs, err)
			}
			u.Memory = readInt(filepath.Join(dir, "memory.current"))
			// memory.peak exists from Linux 5.19.
			if _, err := os.Stat(filepath.Join(dir, "memory.peak")); err == nil {
				u.MemoryPeak = readInt(filepath.Join(dir, "memory.peak"))
			}
			u.Tasks = readInt(filepath.Join(dir, "pids.current"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		u.Unavailable = err.Error()
	}
	return u
}
