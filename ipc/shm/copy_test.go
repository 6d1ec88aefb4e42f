package shm

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/polytropon/polytropon/ipc/memcopy"
)

// TestUseCopyProfileIgnoresOtherCPU: a profile tuned on another kind of CPU must
// not be used, and the driver says so with a warning instead of failing.
func TestUseCopyProfileIgnoresOtherCPU(t *testing.T) {
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	other := memcopy.HostCPU()
	other.Model++
	p := &memcopy.Profile{Version: 1, CPU: other}
	path := memcopy.DefaultProfilePath(false)
	if filepath.Dir(filepath.Dir(path)) != cfg {
		t.Fatalf("user profile path %s is not under XDG_CONFIG_HOME %s", path, cfg)
	}
	if err := p.Save(path); err != nil {
		t.Fatal(err)
	}
	before := memcopy.Default()
	core, logs := observer.New(zap.InfoLevel)
	copyProfileOnce = sync.Once{}
	t.Cleanup(func() { copyProfileOnce = sync.Once{}; memcopy.SetDefault(before) })
	UseCopyProfile(false, zap.New(core))
	if got := logs.FilterMessage("copy profile was tuned on another CPU; using copy()").Len(); got != 1 {
		t.Fatalf("want one warning about the other CPU, got logs %v", logs.All())
	}
	if memcopy.Default() != before {
		t.Fatal("the default copier changed after a foreign profile")
	}
	src := bytes.Repeat([]byte{7}, 100_000)
	dst := make([]byte, len(src))
	if n := CopyData(dst, src); n != len(src) || !bytes.Equal(dst, src) {
		t.Fatalf("CopyData copied %d bytes, data equal %v", n, bytes.Equal(dst, src))
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

// TestUseCopyProfileAppliesThisCPU: a profile for this CPU becomes CopyData's copier.
func TestUseCopyProfileAppliesThisCPU(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	p := &memcopy.Profile{Version: 1, CPU: memcopy.HostCPU()}
	if err := p.Save(memcopy.DefaultProfilePath(false)); err != nil {
		t.Fatal(err)
	}
	before := memcopy.Default()
	core, logs := observer.New(zap.InfoLevel)
	copyProfileOnce = sync.Once{}
	t.Cleanup(func() { copyProfileOnce = sync.Once{}; memcopy.SetDefault(before) })
	UseCopyProfile(false, zap.New(core))
	if logs.FilterMessage("using tuned copy profile").Len() != 1 {
		t.Fatalf("want the profile reported in use, got logs %v", logs.All())
	}
	if memcopy.Default() == before {
		t.Fatal("the default copier did not change")
	}
}
