// Package external runs unmodified benchmark programs, fio and RocksDB's
// db_bench, on a filesystem path of the latency harness and turns their own
// latency output into results.Cell values (Source "fio" or "db_bench").
//
// Each tenant is one process of the program, started concurrently with the
// others in its own directory (Dir/<program>-t<i>, or the caller's Dirs[i] when
// each tenant has its own mount). Their histograms are merged: fio's json+
// latency bins and db_bench's bucket lines are histograms, so merged percentiles
// are those of all the tenants' operations, not an average of percentiles. With
// one tenant a cell's percentiles are exactly the ones the program printed.
//
// Fio and DBBench are the programs as workloads of the latency harness
// (harness.External: `polytropon perf run --workload fio,db_bench`); RunFio and
// RunDBBench run them directly. The programs run on the kernel and FUSE paths
// only: they issue ordinary system calls, and the direct path needs them linked
// against fslib through an LD_PRELOAD shim that does not exist yet, so their
// Run refuses "direct".
//
// Debian's rocksdb-tools (7.8.3 in bookworm) is built with assertions enabled,
// and db_bench says so ("benchmarks unnecessarily slow"): its absolute figures
// are pessimistic, so compare paths with it rather than quote it against
// published RocksDB numbers.
//
// Invariants: a program's flags that this package sets itself (output format,
// directory, database, histogram) are refused in Args rather than silently
// overridden; a missing program is an error naming the Debian package to
// install; on cancellation the programs get SIGINT (fio then still reports what
// it measured, which is returned along with an error wrapping ctx.Err()).
//
// It holds no locks and no state: each call owns its processes and buffers,
// and a Fio or DBBench value is its job, fixed when made.
//
// Measure: `polytropon perf run --workload fio --fio "JOB FLAGS" --paths
// kernel,fuse --out DIR` and `--workload db_bench --db-bench
// fillrandom,readrandom`.
package external

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// paths is what unmodified programs can run on; see the package doc for direct.
var paths = []string{"kernel", "fuse"}

func checkPath(workload, path string) error {
	if slices.Contains(paths, path) {
		return nil
	}
	if path == "direct" {
		return fmt.Errorf("%s: the direct path needs the program linked to fslib through an LD_PRELOAD shim, which does not exist yet; valid paths: %s",
			workload, strings.Join(paths, ", "))
	}
	return fmt.Errorf("%s: unknown path %q; valid paths: %s", workload, path, strings.Join(paths, ", "))
}

// NotInstalledError says that a program is missing and which package has it.
type NotInstalledError struct {
	Program string // as asked for: a name looked up in PATH, or a file
	Package string // the Debian package that installs it
	Err     error
}

func (e *NotInstalledError) Error() string {
	return fmt.Sprintf("%s not found: apt-get install %s (%v)", e.Program, e.Package, e.Err)
}

func (e *NotInstalledError) Unwrap() error { return e.Err }

// lookPath resolves binary (def when empty) to an executable file, or says
// which Debian package pkg provides it.
func lookPath(binary, def, pkg string) (string, error) {
	if binary == "" {
		binary = def
	}
	p, err := exec.LookPath(binary)
	if err != nil {
		return "", &NotInstalledError{Program: binary, Package: pkg, Err: err}
	}
	return p, nil
}

// tenantDirs returns each tenant's directory, creating those it makes up, and
// whether they are this package's own (to be removed afterwards).
func tenantDirs(program, dir string, dirs []string, tenants int) ([]string, bool, error) {
	if tenants < 1 {
		return nil, false, fmt.Errorf("%s: %d tenants; want at least 1", program, tenants)
	}
	if len(dirs) > 0 {
		if len(dirs) != tenants {
			return nil, false, fmt.Errorf("%s: %d tenant directories for %d tenants", program, len(dirs), tenants)
		}
		for _, d := range dirs {
			if st, err := os.Stat(d); err != nil {
				return nil, false, fmt.Errorf("%s: tenant directory: %w", program, err)
			} else if !st.IsDir() {
				return nil, false, fmt.Errorf("%s: tenant directory %s is not a directory", program, d)
			}
		}
		return dirs, false, nil
	}
	if dir == "" {
		return nil, false, fmt.Errorf("%s: no directory given", program)
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, false, fmt.Errorf("%s: %w", program, err)
	} else if !st.IsDir() {
		return nil, false, fmt.Errorf("%s: %s is not a directory", program, dir)
	}
	out := make([]string, tenants)
	for i := range out {
		out[i] = filepath.Join(dir, fmt.Sprintf("%s-t%d", program, i))
		// A previous run's files would change what is measured (fio reuses a
		// laid-out file, db_bench may find an existing database).
		if err := os.RemoveAll(out[i]); err != nil {
			return nil, false, fmt.Errorf("%s: %w", program, err)
		}
		if err := os.Mkdir(out[i], 0o755); err != nil {
			return nil, false, fmt.Errorf("%s: %w", program, err)
		}
	}
	return out, true, nil
}

// proc is one finished tenant process.
type proc struct {
	stdout []byte
	stderr []byte
	cpu    time.Duration // user + system
	err    error
}

// runAll runs one process per argument list concurrently and waits for all of
// them. On cancellation each gets SIGINT, and SIGKILL if it has not exited 10 s
// later.
func runAll(ctx context.Context, bin string, argv [][]string, dirs []string) ([]proc, time.Duration) {
	out := make([]proc, len(argv))
	var wg sync.WaitGroup
	start := time.Now()
	for i := range argv {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.CommandContext(ctx, bin, argv[i]...)
			cmd.Dir = dirs[i]
			var so, se bytes.Buffer
			cmd.Stdout, cmd.Stderr = &so, &se
			cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
			cmd.WaitDelay = 10 * time.Second
			err := cmd.Run()
			p := proc{stdout: so.Bytes(), stderr: se.Bytes(), err: err}
			if cmd.ProcessState != nil {
				p.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			}
			out[i] = p
		}()
	}
	wg.Wait()
	return out, time.Since(start)
}

// procError describes a failed process with the end of what it wrote to stderr,
// which is where both programs explain a bad flag.
func procError(program string, tenant int, p proc) error {
	msg := strings.TrimSpace(string(p.stderr))
	if len(msg) > 600 {
		msg = "..." + msg[len(msg)-600:]
	}
	if msg == "" {
		return fmt.Errorf("%s (tenant %d): %w", program, tenant, p.err)
	}
	return fmt.Errorf("%s (tenant %d): %w: %s", program, tenant, p.err, msg)
}

// refuseFlags rejects Args that set a flag this package sets itself.
func refuseFlags(program string, args []string, own []string) error {
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			return fmt.Errorf("%s: argument %q is not a flag; give the job as --flag=value arguments", program, a)
		}
		name := strings.TrimLeft(a, "-")
		if i := strings.IndexByte(name, '='); i >= 0 {
			name = name[:i]
		}
		if slices.Contains(own, name) {
			return fmt.Errorf("%s: --%s is set by the harness and may not be given in Args", program, name)
		}
	}
	return nil
}

// interrupted wraps ctx's error when the context ended the run.
func interrupted(ctx context.Context, program string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s interrupted: %w", program, err)
	}
	return nil
}

var errNoOutput = errors.New("no results in the output")
