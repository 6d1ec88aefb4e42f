// Package tailbuf keeps the last bytes a child process wrote, for error
// messages: perf's helpers start services and workers whose output matters only
// when they fail. A Buffer is safe for concurrent use (exec copies stdout and
// stderr from two goroutines); its mutex is a leaf. It keeps at most Size
// bytes, whatever the child writes; it is off every measured path.
package tailbuf

import (
	"strings"
	"sync"
)

// Size is how much a Buffer keeps.
const Size = 16 << 10

// Buffer is an io.Writer that keeps the last Size bytes written to it.
type Buffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - Size; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

// String returns what is kept, trimmed, or "(no output)".
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(string(b.buf))
	if s == "" {
		return "(no output)"
	}
	return s
}
