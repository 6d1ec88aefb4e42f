//go:build ceph

package rbd

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/blockdevtest"
	"github.com/polytropon/polytropon/internal/testenv"
)

// image returns options for a fresh image name, removed when t ends.
func image(t testing.TB) Options {
	t.Helper()
	c := testenv.Ceph(t)
	var b [6]byte
	rand.Read(b[:])
	o := Options{Conf: c.Conf, ClientID: c.ID, Keyring: c.Keyring, Image: "polytropon-test-" + hex.EncodeToString(b[:])}
	t.Cleanup(func() { Remove(o) })
	return o
}

func TestConformance(t *testing.T) {
	blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
		o := image(t)
		o.CreateSize = 8 << 20
		d, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

// TestCreateOpenResize: Create refuses an existing name, Open sees the size,
// Resize grows the image and the next Open sees the new size with the old data.
func TestCreateOpenResize(t *testing.T) {
	o := image(t)
	if _, err := Open(o); err == nil {
		t.Fatal("Open of a missing image without CreateSize succeeded")
	}
	if err := Create(o, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := Create(o, 4<<20); err == nil {
		t.Fatal("Create of an existing image succeeded")
	}
	if err := Create(Options{Conf: o.Conf, ClientID: o.ClientID, Keyring: o.Keyring, Image: o.Image + "x"}, 1000); err == nil {
		t.Fatal("Create with a size that is not a multiple of the block size succeeded")
	}
	d, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if d.Size() != 4<<20 {
		t.Fatalf("size %d", d.Size())
	}
	buf := blockdevtest.Buf(t, 4096)
	blockdevtest.Fill(buf, 7)
	if _, err := d.WriteAt(buf, 4<<20-4096); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Resize(o, 16<<20); err != nil {
		t.Fatal(err)
	}
	d, err = Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 16<<20 {
		t.Fatalf("size after resize %d", d.Size())
	}
	got := blockdevtest.Buf(t, 4096)
	if _, err := d.ReadAt(got, 4<<20-4096); err != nil || !bytes.Equal(got, buf) {
		t.Fatalf("data before the old end changed by resize (%v)", err)
	}
	if _, err := d.WriteAt(buf, 16<<20-4096); err != nil {
		t.Fatalf("write in the grown part: %v", err)
	}
}

// TestUnreachableCluster: Open fails within the timeout naming the monitor.
func TestUnreachableCluster(t *testing.T) {
	c := testenv.Ceph(t)
	src, err := os.ReadFile(c.Conf)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "mon host") {
			l = "mon host = 127.0.0.1:9"
		}
		out = append(out, l)
	}
	conf := filepath.Join(t.TempDir(), "unreachable.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		d, err := Open(Options{Conf: conf, ClientID: c.ID, Keyring: c.Keyring, Image: "x", ConnectTimeout: 3 * time.Second})
		if err == nil {
			d.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:9") {
			t.Fatalf("error %v, want one naming 127.0.0.1:9", err)
		}
		t.Logf("error: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("Open did not return within 2 minutes with a 3 s timeout")
	}
}

// TestOSDRestartKeepsFlushedData: queued writes keep going while the OSD
// restarts (librados resends them); every write completed before a successful
// Flush reads back afterwards through a new connection.
func TestOSDRestartKeepsFlushedData(t *testing.T) {
	c := testenv.Ceph(t)
	if c.Dir == "" {
		testenv.SkipOrFail(t, "POLYTROPON_CEPH_DIR unset: cannot restart the OSD")
		return
	}
	o := image(t)
	o.CreateSize = 16 << 20
	d, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	const bs = 4096
	blocks := int(d.Size() / bs)
	type result struct {
		flushed int
		err     error
	}
	stop := make(chan struct{})
	res := make(chan result, 1)
	go func() {
		buf := blockdevtest.Buf(t, bs)
		flushed := 0
		for i := 0; i < blocks; i++ {
			select {
			case <-stop:
				res <- result{flushed, nil}
				return
			default:
			}
			blockdevtest.Fill(buf, uint64(i))
			if _, err := d.WriteAt(buf, int64(i)*bs); err != nil {
				res <- result{flushed, err}
				return
			}
			if err := d.Flush(); err != nil {
				res <- result{flushed, err}
				return
			}
			flushed = i + 1
		}
		res <- result{flushed, nil}
	}()
	time.Sleep(300 * time.Millisecond)
	out, err := exec.Command("bash", filepath.Join("..", "..", "scripts", "ceph-dev-cluster.sh"), "restart-osd", c.Dir).CombinedOutput()
	if err != nil {
		close(stop)
		<-res
		t.Fatalf("restart-osd: %v\n%s", err, out)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	var r result
	select {
	case r = <-res:
	case <-time.After(3 * time.Minute):
		t.Fatal("writer still blocked 3 minutes after the OSD came back")
	}
	if r.err != nil {
		t.Logf("writer stopped with an error during the restart (allowed): %v", r.err)
	}
	if r.flushed == 0 {
		t.Fatal("nothing was flushed")
	}
	if err := d.Close(); err != nil && !errors.Is(err, blockdev.ErrClosed) {
		t.Logf("close: %v", err)
	}
	o.CreateSize = 0
	d2, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	got, want := blockdevtest.Buf(t, bs), make([]byte, bs)
	for i := 0; i < r.flushed; i++ {
		if _, err := d2.ReadAt(got, int64(i)*bs); err != nil {
			t.Fatal(err)
		}
		blockdevtest.Fill(want, uint64(i))
		if !bytes.Equal(got, want) {
			t.Fatalf("flushed block %d of %d differs after the OSD restart", i, r.flushed)
		}
	}
	t.Logf("%d flushed blocks survived the OSD restart", r.flushed)
}
