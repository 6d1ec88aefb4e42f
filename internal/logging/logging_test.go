package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestJSONFormat(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "info", FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("hidden")
	l.Info("shown")
	_ = l.Sync()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1 (debug must be filtered): %q", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if m["msg"] != "shown" {
		t.Fatalf("msg = %v", m["msg"])
	}
}

func TestBadFlags(t *testing.T) {
	if _, err := New(nil, "loud", FormatConsole); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("bad level: err = %v", err)
	}
	if _, err := New(nil, "info", "xml"); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Fatalf("bad format: err = %v", err)
	}
}
