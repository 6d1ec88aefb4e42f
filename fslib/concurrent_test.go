package fslib_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"testing"

	"github.com/polytropon/polytropon/fslib"
)

// TestConcurrentFile: ReadAt and WriteAt on disjoint blocks from many goroutines,
// and Read/Write sharing the offset, whose mutex must make every Write land in its
// own range.
func TestConcurrentFile(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		const workers, blocks, bs = 8, 16, 512
		f, err := c.Create("f")
		must(t, err)
		var wg sync.WaitGroup
		errs := make(chan error, workers*2)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, bs)
				got := make([]byte, bs)
				for b := range blocks {
					off := int64((w*blocks + b) * bs)
					for i := range buf {
						buf[i] = byte(w*31 + b*7 + i)
					}
					if _, err := f.WriteAt(buf, off); err != nil {
						errs <- err
						return
					}
					if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, buf) {
						errs <- fmt.Errorf("worker %d block %d: read back %v", w, b, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}

		// Sequential writers: each Write's bytes must be contiguous.
		g, err := c.Create("g")
		must(t, err)
		var wg2 sync.WaitGroup
		for w := range workers {
			wg2.Add(1)
			go func() {
				defer wg2.Done()
				rec := bytes.Repeat([]byte{byte('a' + w)}, 100)
				for range 20 {
					if _, err := g.Write(rec); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg2.Wait()
		data, err := c.ReadFile("g")
		must(t, err)
		if len(data) != workers*20*100 {
			t.Fatalf("size %d", len(data))
		}
		for i := 0; i < len(data); i += 100 {
			if !bytes.Equal(data[i:i+100], bytes.Repeat(data[i:i+1], 100)) {
				t.Fatalf("interleaved write at %d", i)
			}
		}
		// Concurrent readers share the offset: together they read the file once.
		if _, err := g.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		total := 0
		var wg3 sync.WaitGroup
		for range workers {
			wg3.Add(1)
			go func() {
				defer wg3.Done()
				buf := make([]byte, 100)
				for {
					n, err := g.Read(buf)
					mu.Lock()
					total += n
					mu.Unlock()
					if err == io.EOF {
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg3.Wait()
		if total != len(data) {
			t.Fatalf("readers read %d bytes of %d", total, len(data))
		}
		must(t, f.Close())
		must(t, g.Close())
	})
}

// TestConcurrentClose: Close racing with reads and writes. Every operation either
// works or reports os.ErrClosed, and the FS never sees the handle after its Close
// (the race detector and the FS's own EBADF check would say).
func TestConcurrentClose(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		for round := range 20 {
			f, err := c.Create(fmt.Sprintf("f%d", round))
			must(t, err)
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 64)
					for i := 0; ; i++ {
						var err error
						switch (w + i) % 4 {
						case 0:
							_, err = f.WriteAt(buf, int64(i*64))
						case 1:
							_, err = f.ReadAt(buf, 0)
							if err == io.EOF {
								err = nil
							}
						case 2:
							_, err = f.Write(buf)
						case 3:
							_, err = f.Stat()
						}
						if err != nil {
							if !errors.Is(err, os.ErrClosed) {
								t.Errorf("op during close: %v", err)
							}
							return
						}
					}
				}()
			}
			must(t, f.Close())
			wg.Wait()
		}
	})
}

// TestConcurrentNamespace: goroutines create, stat, list, rename and remove in
// their own directories and in a shared one.
func TestConcurrentNamespace(t *testing.T) {
	forEach(t, func(t *testing.T, c *fslib.Client) {
		must(t, c.Mkdir("shared", 0o755))
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dir := fmt.Sprintf("w%d", w)
				if err := c.MkdirAll(dir+"/x/y", 0o755); err != nil {
					t.Error(err)
					return
				}
				for i := range 30 {
					name := fmt.Sprintf("%s/x/f%d", dir, i)
					if err := c.WriteFile(name, []byte(name), 0o644); err != nil {
						t.Error(err)
						return
					}
					if err := c.Rename(name, fmt.Sprintf("shared/%d-%d", w, i)); err != nil {
						t.Error(err)
						return
					}
					if _, err := c.ReadDir("shared"); err != nil {
						t.Error(err)
						return
					}
					if _, err := c.Stat(fmt.Sprintf("shared/%d-%d", w, i)); err != nil {
						t.Error(err)
						return
					}
				}
				if err := c.RemoveAll(dir); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		names, err := c.ReadDirNames("shared")
		must(t, err)
		if len(names) != 6*30 {
			t.Fatalf("shared has %d entries", len(names))
		}
		must(t, c.RemoveAll("shared"))
		if _, err := c.Stat("shared"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("shared after RemoveAll: %v", err)
		}
	})
}
