package tailbuf

import (
	"strings"
	"testing"
)

func TestBufferKeepsTheTail(t *testing.T) {
	var b Buffer
	if got := b.String(); got != "(no output)" {
		t.Fatalf("empty: %q", got)
	}
	b.Write([]byte(strings.Repeat("a", Size)))
	b.Write([]byte("  the end\n"))
	got := b.String()
	if !strings.HasSuffix(got, "the end") || len(got) > Size {
		t.Fatalf("kept %d bytes ending %q", len(got), got[max(0, len(got)-10):])
	}
}
