package shm

import (
	"errors"
	"sync"

	"go.uber.org/zap"

	"github.com/polytropon/polytropon/internal/logging"
	"github.com/polytropon/polytropon/ipc/memcopy"
)

// CopyData copies min(len(dst), len(src)) bytes from src to dst and returns the count.
//
// Every data copy of the direct path between a private buffer and a shared region
// (client request and reply data, service handlers filling a client's buffer) goes
// through this one function. It uses the process-wide tuned copier of ipc/memcopy,
// which is the built-in copy() until UseCopyProfile finds a profile for this CPU.
// dst and src never overlap here: one is always private memory and the other a
// shared region.
func CopyData(dst, src []byte) int { return memcopy.Copy(dst, src) }

var copyProfileOnce sync.Once

// UseCopyProfile loads this CPU's tuned copy profile (written by `polytropon tune
// copy`) from its standard location, once per process, and makes CopyData use it.
// daemon selects the daemon's profile (/var/lib/polytropon/) rather than the user's.
// A missing profile is the normal untuned state; a corrupt one, or one tuned on
// another kind of CPU, is ignored with a warning and copy() stays in use. The front
// and back drivers call it when they start.
func UseCopyProfile(daemon bool, l *zap.Logger) {
	copyProfileOnce.Do(func() {
		l = logging.OrNop(l)
		path := memcopy.DefaultProfilePath(daemon)
		p, err := memcopy.LoadDefault(daemon)
		switch {
		case errors.Is(err, memcopy.ErrOtherCPU):
			l.Warn("copy profile was tuned on another CPU; using copy()", zap.String("path", path), zap.Error(err))
		case err != nil:
			l.Warn("copy profile unusable; using copy()", zap.String("path", path), zap.Error(err))
		case p != nil:
			l.Info("using tuned copy profile", zap.String("path", path), zap.String("cpu", p.CPU.String()))
		}
	})
}
