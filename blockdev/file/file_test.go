package file

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/alignedbuf"
	"github.com/polytropon/polytropon/blockdev/blockdevtest"
	"github.com/polytropon/polytropon/internal/testenv"
)

const testSize = 8 << 20

// diskDir is a directory on a disk file system (t.TempDir may be tmpfs).
func diskDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "blockdev-file-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func openNew(t *testing.T, path string, o Options) *File {
	t.Helper()
	o.CreateSize = testSize
	d, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestConformanceDirectFile(t *testing.T) {
	testenv.IOUring(t)
	dir := diskDir(t)
	i := 0
	blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
		i++
		d := openNew(t, filepath.Join(dir, "dev"+string(rune('a'+i))), Options{})
		if !d.Direct() {
			t.Fatalf("%s on a disk file system fell back to buffered I/O", d.Path())
		}
		return d
	})
}

func TestConformanceBufferedFile(t *testing.T) {
	dir := diskDir(t)
	i := 0
	blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
		i++
		return openNew(t, filepath.Join(dir, "buf"+string(rune('a'+i))), Options{Buffered: true})
	})
}

// TestTmpfsFallback checks that a tmpfs file (O_DIRECT only emulated) falls back to
// buffered I/O, logs it, and still passes the suite.
func TestTmpfsFallback(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "blockdev-file-test-")
	if err != nil {
		testenv.SkipOrFail(t, "test needs tmpfs at /dev/shm: "+err.Error())
		return
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	core, logs := observer.New(zapcore.WarnLevel)
	d := openNew(t, filepath.Join(dir, "probe"), Options{Logger: zap.New(core)})
	if d.Direct() {
		t.Fatal("tmpfs file opened for direct I/O")
	}
	if logs.FilterMessageSnippet("falling back to buffered").Len() != 1 {
		t.Fatalf("fallback not logged: %v", logs.All())
	}
	integrity(t, d, filepath.Join(dir, "probe"))
	d.Close()
	i := 0
	blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
		i++
		return openNew(t, filepath.Join(dir, "shm"+string(rune('a'+i))), Options{})
	})
}

// integrity does random-offset, random-size I/O through d (synchronous and queued,
// with and without registered buffers) and checks it against pread/pwrite on a
// separate descriptor of refPath.
func integrity(t *testing.T, d *File, refPath string) {
	t.Helper()
	ref, err := os.OpenFile(refPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	bs := d.BlockSize()
	blocks := d.Size() / int64(bs)
	const depth = 16
	maxBlocks := 32
	pool, err := alignedbuf.NewPool(maxBlocks*bs, depth)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	q, err := d.NewQueue(depth)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	r := rand.New(rand.NewPCG(42, 7))
	out := make([]blockdev.Completion, depth)
	for round := 0; round < 3; round++ {
		if round == 2 {
			if reg, ok := q.(blockdev.BufferRegistrar); ok {
				if err := reg.RegisterBuffers([][]byte{pool.Region()}); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Device writes, reference reads.
		type io struct {
			buf []byte
			off int64
		}
		var ios []io
		for k := 0; k < depth; k++ {
			nb := 1 + r.IntN(maxBlocks)
			b := pool.Get()[:nb*bs]
			blockdevtest.Fill(b, r.Uint64())
			// Distinct extents per round keep queued writes from overlapping.
			off := (int64(k)*(blocks/depth) + r.Int64N(blocks/depth-int64(nb))) * int64(bs)
			ios = append(ios, io{b, off})
		}
		if round == 0 {
			for _, x := range ios {
				if _, err := d.WriteAt(x.buf, x.off); err != nil {
					t.Fatal(err)
				}
			}
		} else {
			reqs := make([]blockdev.Request, len(ios))
			for k, x := range ios {
				reqs[k] = blockdev.Request{Op: blockdev.OpWrite, Buf: x.buf, Off: x.off, Cookie: uint64(k)}
			}
			if n, err := q.Submit(reqs); err != nil || n != len(reqs) {
				t.Fatalf("Submit = %d, %v", n, err)
			}
			for got := 0; got < len(reqs); {
				n, err := q.Poll(1, out)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range out[:n] {
					if c.Err != nil || c.N != len(ios[c.Cookie].buf) {
						t.Fatalf("write %d: %+v", c.Cookie, c)
					}
				}
				got += n
			}
		}
		for _, x := range ios {
			want := make([]byte, len(x.buf))
			if _, err := ref.ReadAt(want, x.off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want, x.buf) {
				t.Fatalf("round %d: pread at %d disagrees with the device write", round, x.off)
			}
		}
		// Reference writes, device reads.
		for k, x := range ios {
			blockdevtest.Fill(x.buf, uint64(round*100+k))
			if _, err := ref.WriteAt(x.buf, x.off); err != nil {
				t.Fatal(err)
			}
			clear(x.buf)
		}
		reqs := make([]blockdev.Request, len(ios))
		for k, x := range ios {
			reqs[k] = blockdev.Request{Op: blockdev.OpRead, Buf: x.buf, Off: x.off, Cookie: uint64(k)}
		}
		if n, err := q.Submit(reqs); err != nil || n != len(reqs) {
			t.Fatalf("Submit = %d, %v", n, err)
		}
		for got := 0; got < len(reqs); {
			n, err := q.Poll(1, out)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
		for k, x := range ios {
			want := make([]byte, len(x.buf))
			blockdevtest.Fill(want, uint64(round*100+k))
			if !bytes.Equal(want, x.buf) {
				t.Fatalf("round %d: device read at %d disagrees with pwrite", round, x.off)
			}
			if err := pool.Put(x.buf[:pool.BufSize()]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestIntegrityDirectFile(t *testing.T) {
	testenv.IOUring(t)
	path := filepath.Join(diskDir(t), "dev")
	d := openNew(t, path, Options{})
	defer d.Close()
	integrity(t, d, path)
}

// TestLoopDevice runs the suite and the integrity check on a loop device with direct
// I/O to its backing file.
func TestLoopDevice(t *testing.T) {
	testenv.LoopDevices(t)
	testenv.IOUring(t)
	dir := diskDir(t)
	loop := func(t *testing.T, name string) (string, string) {
		backing := filepath.Join(dir, name)
		if err := os.WriteFile(backing, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(backing, testSize); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("losetup", "--find", "--show", "--direct-io=on", backing).CombinedOutput()
		if err != nil {
			testenv.SkipOrFail(t, "losetup failed: "+strings.TrimSpace(string(out)))
		}
		dev := strings.TrimSpace(string(out))
		t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
		return dev, backing
	}
	dev, backing := loop(t, "integrity")
	d, err := Open(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !d.IsBlockDevice() || !d.Direct() || d.Size() != testSize {
		t.Fatalf("loop device: block %v direct %v size %d", d.IsBlockDevice(), d.Direct(), d.Size())
	}
	integrity(t, d, backing)
	d.Close()
	i := 0
	blockdevtest.Run(t, func(t *testing.T) blockdev.Device {
		i++
		dev, _ := loop(t, "suite"+string(rune('a'+i)))
		d, err := Open(dev, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}

func TestOpenErrors(t *testing.T) {
	dir := diskDir(t)
	if _, err := Open(filepath.Join(dir, "missing"), Options{}); err == nil {
		t.Fatal("Open of a missing file without CreateSize succeeded")
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := Open(empty, Options{}); err == nil || !strings.Contains(err.Error(), "smaller than one") {
		t.Fatalf("Open of an empty file: %v", err)
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("Open of a directory succeeded")
	}
	d := openNew(t, filepath.Join(dir, "ro"), Options{})
	d.Close()
	d, err := Open(filepath.Join(dir, "ro"), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	buf := blockdevtest.Buf(t, d.BlockSize())
	if _, err := d.WriteAt(buf, 0); err == nil {
		t.Fatal("write to a read-only device succeeded")
	}
	if _, err := d.NewQueue(0); err == nil {
		t.Fatal("NewQueue(0) succeeded")
	}
	var ae *blockdev.AlignmentError
	if _, err := d.ReadAt(buf[1:], 0); !errors.As(err, &ae) {
		t.Fatalf("misaligned read: %v", err)
	}
}

func BenchmarkQueueRandRead(b *testing.B) {
	testenv.IOUring(b)
	dir, _ := os.MkdirTemp("/var/tmp", "blockdev-bench-")
	defer os.RemoveAll(dir)
	// Write real data: reads of fallocated but unwritten extents never reach the disk.
	path := filepath.Join(dir, "dev")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xa5}, 64<<20), 0o600); err != nil {
		b.Fatal(err)
	}
	d, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	const depth = 32
	pool, _ := alignedbuf.NewPool(4096, depth)
	defer pool.Close()
	qu, err := d.NewQueue(depth)
	if err != nil {
		b.Fatal(err)
	}
	defer qu.Close()
	if reg, ok := qu.(blockdev.BufferRegistrar); ok {
		reg.RegisterBuffers([][]byte{pool.Region()})
	}
	reqs := make([]blockdev.Request, depth)
	for i := range reqs {
		reqs[i] = blockdev.Request{Op: blockdev.OpRead, Buf: pool.Get(), Cookie: uint64(i)}
	}
	out := make([]blockdev.Completion, depth)
	r := rand.New(rand.NewPCG(1, 1))
	blocks := d.Size() / 4096
	pending := make([]blockdev.Request, 0, depth)
	for i := range reqs {
		reqs[i].Off = r.Int64N(blocks) * 4096
	}
	qu.Submit(reqs)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		n, err := qu.Poll(1, out)
		if err != nil {
			b.Fatal(err)
		}
		pending = pending[:0]
		for _, c := range out[:n] {
			rq := reqs[c.Cookie]
			rq.Off = r.Int64N(blocks) * 4096
			pending = append(pending, rq)
		}
		qu.Submit(pending)
		i += n
	}
}
