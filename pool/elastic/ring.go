package elastic

import (
	"sync"
	"time"
)

// Record is one decision as the driver applied it.
type Record struct {
	Time time.Time `json:"time"`
	Pool string    `json:"pool"`
	Tick int64     `json:"tick"`
	Decision
	// Applied is what the service set (it may clamp To to its own bounds);
	// Error is set when applying failed.
	Applied int64  `json:"applied"`
	Error   string `json:"error,omitempty"`
}

// Ring keeps the most recent records, oldest first; its capacity is fixed at
// construction. Safe for concurrent use.
type Ring struct {
	mu   sync.Mutex
	buf  []Record
	next int // where the next record goes
	n    int // records held (<= len(buf))
}

// NewRing returns a ring of capacity records (at least 1).
func NewRing(capacity int) *Ring { return &Ring{buf: make([]Record, max(capacity, 1))} }

// Add appends r, dropping the oldest record when full.
func (r *Ring) Add(rec Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf[r.next] = rec
	r.next = (r.next + 1) % len(r.buf)
	r.n = min(r.n+1, len(r.buf))
}

// Records returns a copy of the records, oldest first.
func (r *Ring) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Record, 0, r.n)
	start := (r.next - r.n + len(r.buf)) % len(r.buf)
	for i := 0; i < r.n; i++ {
		out = append(out, r.buf[(start+i)%len(r.buf)])
	}
	return out
}
