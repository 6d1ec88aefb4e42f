package cache

import (
	"bytes"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/memfs"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

// smallTmpfs mounts a tmpfs of size (mount's syntax, e.g. "8m") on a fresh
// directory, unmounted when the test ends.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	testenv.Root(t)
	dir := t.TempDir()
	if err := unix.Mount("polytropon-test", dir, "tmpfs", 0, "size="+size); err != nil {
		testenv.SkipOrFail(t, "mount tmpfs: "+err.Error())
		return ""
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// spaceCache is a write-back cache over a passthrough of dir that flushes only
// when told to (fsync, close) and whose dirty limit is far above the store's
// size: what it holds back is bounded by the space reservation alone.
func spaceCache(t *testing.T, dir string) (*FS, *passthrough.FS) {
	t.Helper()
	p, err := passthrough.New(passthrough.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c := New(p, NewStore(64<<20), Options{Policy: "writeback", FlushInterval: -1, DirtyLimit: 1 << 30})
	t.Cleanup(func() { c.CloseFS() })
	return c, p
}

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// createSynced creates name through c with data, fsyncs it and returns it open.
func createSynced(t *testing.T, c *FS, name string, data []byte) libservices.Handle {
	t.Helper()
	h, err := c.Open(name, libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create "+name, err)
	if n, err := c.WriteAt(h, data, 0); n != len(data) || err != nil {
		t.Fatalf("write %s: %d of %d bytes, %v", name, n, len(data), err)
	}
	mustOK(t, "fsync "+name, c.Fsync(h))
	return h
}

// readAll reads name through fsys, checking that the size it reports is the
// number of bytes it reads.
func readAll(t *testing.T, fsys libservices.FS, name string) []byte {
	t.Helper()
	h, err := fsys.Open(name, libservices.O_RDONLY, 0)
	mustOK(t, "open "+name, err)
	defer fsys.Close(h)
	var a libservices.Attr
	mustOK(t, "fstat "+name, fsys.Fstat(h, &a))
	buf := make([]byte, a.Size+PageSize)
	n, err := fsys.ReadAt(h, buf, 0)
	mustOK(t, "read "+name, err)
	if int64(n) != a.Size {
		t.Fatalf("%s: size %d, but %d bytes read", name, a.Size, n)
	}
	return buf[:n]
}

// hostBytes reads a file of the store with the kernel, below every layer.
func hostBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// appendUntilFull appends chunks of data to h at the cache's size, like an
// application that writes a stream, until a write fails: it returns what was
// acknowledged and the error. Every write is checked to leave the size the
// cache reports equal to what was acknowledged.
func appendUntilFull(t *testing.T, c *FS, h libservices.Handle, data []byte, chunk int) (int, error) {
	t.Helper()
	acked := 0
	for acked < len(data) {
		n, err := c.WriteAt(h, data[acked:min(acked+chunk, len(data))], int64(acked))
		acked += n
		var a libservices.Attr
		mustOK(t, "fstat", c.Fstat(h, &a))
		if a.Size != int64(acked) {
			t.Fatalf("after %d bytes acknowledged (last write %d, %v) the cache reports size %d", acked, n, err, a.Size)
		}
		if err != nil {
			return acked, err
		}
	}
	return acked, nil
}

// TestSpaceENOSPCAtWrite is issue 18's case: an 8 MiB tmpfs as the branch
// under a write-back cache, and 200 writes of 1 MiB. Writes past the store's
// capacity fail with ENOSPC at write, not at close; everything acknowledged
// is in the store after close and reads back through a fresh cache, with sizes
// that match the data; a file fsynced before is intact; and the cache held
// data back until the store neared full.
func TestSpaceENOSPCAtWrite(t *testing.T) {
	dir := smallTmpfs(t, "8m")
	c, _ := spaceCache(t, dir)

	synced := randomBytes(1, 1<<20)
	mustOK(t, "close synced", c.Close(createSynced(t, c, "synced", synced)))

	h, err := c.Open("big", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create big", err)
	data := randomBytes(2, 16<<20) // twice the store
	n, err := c.WriteAt(h, data[:1<<20], 0)
	if err != nil || n != 1<<20 {
		t.Fatalf("first 1 MiB: %d, %v", n, err)
	}
	if d := dirtyBytes(c); d != 1<<20 {
		t.Fatalf("%d bytes held back after the first MiB into a store with 7 MiB free, want 1 MiB: the test would not test write-back", d)
	}
	if got := hostBytes(t, filepath.Join(dir, "big")); len(got) != 0 {
		t.Fatalf("the store has %d bytes of a held-back write: its size reached the store before its data", len(got))
	}
	acked, err := appendUntilFull(t, c, h, data, 1<<20)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("16 MiB into an 8 MiB store: %d bytes acknowledged, then %v, want ENOSPC at write", acked, err)
	}
	// 7 MiB were free; the safety margin and tmpfs's own use may cost a little.
	if acked > 7<<20 || acked < 6<<20 {
		t.Fatalf("%d bytes acknowledged into 7 MiB of free space", acked)
	}
	// The store is full now: the rest of issue 18's 200 writes of 1 MiB
	// fail too, and change nothing.
	for i := acked >> 20; i < 200; i++ {
		if n, err := c.WriteAt(h, data[:1<<20], int64(acked)); n != 0 || err != syscall.ENOSPC {
			t.Fatalf("write %d into the full store: %d, %v, want ENOSPC", i, n, err)
		}
	}
	if got := readAll(t, c, "big"); !bytes.Equal(got, data[:acked]) {
		t.Fatalf("through the cache, %d bytes read, %d acknowledged (equal prefix: %v)", len(got), acked, bytes.HasPrefix(data, got))
	}
	mustOK(t, "close big: everything acknowledged fits", c.Close(h))
	if d := dirtyBytes(c); d != 0 {
		t.Fatalf("%d dirty bytes after close", d)
	}
	if got := hostBytes(t, filepath.Join(dir, "big")); !bytes.Equal(got, data[:acked]) {
		t.Fatalf("the store has %d bytes of big, %d acknowledged", len(got), acked)
	}
	mustOK(t, "close cache", c.CloseFS())

	fresh, _ := spaceCache(t, dir)
	if got := readAll(t, fresh, "big"); !bytes.Equal(got, data[:acked]) {
		t.Fatalf("a fresh cache reads %d bytes of big, %d acknowledged", len(got), acked)
	}
	if got := readAll(t, fresh, "synced"); !bytes.Equal(got, synced) {
		t.Fatalf("the file fsynced before the store filled reads %d bytes, differing", len(got))
	}
}

// TestSpaceFreedHoldsBackAgain: once the cache has filled the store, it holds
// nothing back (a write fails at once); once another file is unlinked, writes
// are held back again, and they reach the store at close.
func TestSpaceFreedHoldsBackAgain(t *testing.T) {
	dir := smallTmpfs(t, "8m")
	c, _ := spaceCache(t, dir)
	mustOK(t, "close old", c.Close(createSynced(t, c, "old", randomBytes(3, 2<<20))))
	f, err := c.Open("filler", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create filler", err)
	if acked, err := appendUntilFull(t, c, f, make([]byte, 8<<20), 1<<20); err != syscall.ENOSPC {
		t.Fatalf("filling the store: %d bytes, then %v, want ENOSPC", acked, err)
	}
	mustOK(t, "close filler", c.Close(f))

	h, err := c.Open("new", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create new", err)
	data := randomBytes(4, 256<<10)
	if n, err := c.WriteAt(h, data, 0); n != 0 || err != syscall.ENOSPC {
		t.Fatalf("write into the full store: %d, %v, want ENOSPC", n, err)
	}
	if d := dirtyBytes(c); d != 0 {
		t.Fatalf("%d bytes held back in a full store", d)
	}
	mustOK(t, "unlink old", c.Unlink("old"))
	n, err := c.WriteAt(h, data, 0)
	if err != nil || n != len(data) {
		t.Fatalf("write after 2 MiB were freed: %d, %v", n, err)
	}
	if d := dirtyBytes(c); d != int64(len(data)) {
		t.Fatalf("%d bytes held back after space was freed, want %d", d, len(data))
	}
	if got := hostBytes(t, filepath.Join(dir, "new")); len(got) != 0 {
		t.Fatalf("the store has %d bytes of a write the cache holds back", len(got))
	}
	mustOK(t, "close new", c.Close(h))
	if got := hostBytes(t, filepath.Join(dir, "new")); !bytes.Equal(got, data) {
		t.Fatalf("after close the store has %d bytes of new, %d acknowledged", len(got), len(data))
	}
}

// TestSpaceOtherWriterSeen: with its flusher running, a cache sees within
// about spaceStale that another writer filled the store, and from then on
// fails writes at once instead of holding them back. (Liveness, not timing:
// the wait is bounded generously.)
func TestSpaceOtherWriterSeen(t *testing.T) {
	dir := smallTmpfs(t, "8m")
	p, err := passthrough.New(passthrough.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c := New(p, NewStore(64<<20), Options{Policy: "writeback", FlushInterval: time.Hour, DirtyLimit: 1 << 30})
	defer c.CloseFS()
	h, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create", err)
	defer c.Close(h)
	_, err = c.WriteAt(h, make([]byte, PageSize), 0)
	mustOK(t, "write", err)
	if d := dirtyBytes(c); d != PageSize {
		t.Fatalf("%d bytes held back, want a page", d)
	}
	mustOK(t, "fsync", c.Fsync(h))
	filled := sinceStart()
	fill(t, p, "filler", 0)
	for i := 0; c.space.readAt.Load() <= filled; i++ {
		if i == 30000 {
			t.Fatal("the flusher never read the free space again")
		}
		time.Sleep(time.Millisecond)
	}
	if n, err := c.WriteAt(h, make([]byte, PageSize), PageSize); n != 0 || err != syscall.ENOSPC {
		t.Fatalf("write after another writer filled the store: %d, %v, want ENOSPC", n, err)
	}
}

// TestSpaceOtherWriterFills: another writer fills the store while the cache
// holds data back for which it had reserved space. The failed write-back is
// reported at fsync and then at close, never loses fsynced data, and never
// leaves the store with a size that covers data it did not take: what the
// store has of the file is a prefix of what was acknowledged. While the
// file is open the cache still has all of it, and a later fsync, once space
// is freed, writes it.
func TestSpaceOtherWriterFills(t *testing.T) {
	for _, name := range []string{"fsync-after-free", "close-while-full", "truncate-while-full"} {
		t.Run(name, func(t *testing.T) {
			dir := smallTmpfs(t, "8m")
			c, p := spaceCache(t, dir)
			synced := randomBytes(5, 1<<20)
			s := createSynced(t, c, "synced", synced)
			// Half a MiB of the file lands: its pages below are then
			// overwritten and extended by held-back writes.
			h := createSynced(t, c, "f", randomBytes(6, 512<<10))
			data := randomBytes(7, 2<<20)
			n, err := c.WriteAt(h, data, 0)
			if err != nil || n != len(data) {
				t.Fatalf("write f: %d, %v", n, err)
			}
			if d := dirtyBytes(c); d != int64(len(data)) {
				t.Fatalf("%d bytes held back, want %d", d, len(data))
			}
			// The other writer leaves room for a quarter of the held data.
			fill(t, p, "filler", uint64(len(data)/4/PageSize))

			if err := c.Fsync(h); err != syscall.ENOSPC {
				t.Fatalf("fsync of 2 MiB held back into 0.5 MiB: %v, want ENOSPC", err)
			}
			stored := hostBytes(t, filepath.Join(dir, "f"))
			if len(stored) < 512<<10 || !bytes.Equal(stored, data[:len(stored)]) {
				t.Fatalf("after the failed fsync the store has %d bytes of f, not a prefix of the %d acknowledged", len(stored), len(data))
			}
			if got := readAll(t, c, "f"); !bytes.Equal(got, data) {
				t.Fatalf("through the cache f reads %d bytes, %d acknowledged and held", len(got), len(data))
			}
			// The store refused: writes now go to it at once and fail there.
			if n, err := c.WriteAt(s, []byte("more"), int64(len(synced))); n != 0 || err != syscall.ENOSPC {
				t.Fatalf("write after the store refused: %d, %v, want ENOSPC", n, err)
			}
			if got := readAll(t, c, "synced"); !bytes.Equal(got, synced) {
				t.Fatalf("fsynced file reads %d bytes, differing", len(got))
			}
			mustOK(t, "close synced", c.Close(s))

			switch name {
			case "close-while-full":
				if err := c.Close(h); err != syscall.ENOSPC {
					t.Fatalf("close of f in a full store: %v, want ENOSPC", err)
				}
				stored := hostBytes(t, filepath.Join(dir, "f"))
				if len(stored) < 512<<10 || !bytes.Equal(stored, data[:len(stored)]) {
					t.Fatalf("after the failed close the store has %d bytes of f, not a prefix of the %d acknowledged", len(stored), len(data))
				}
				if got := readAll(t, c, "f"); !bytes.Equal(got, stored) {
					t.Fatalf("after the failed close the cache reads %d bytes of f, the store has %d", len(got), len(stored))
				}
				// The pages dropped at close freed nothing in the store.
				g, err := c.Open("g", libservices.O_RDWR|libservices.O_CREAT, 0o644)
				mustOK(t, "create g", err)
				if n, err := c.WriteAt(g, []byte("more"), 0); n != 0 || err != syscall.ENOSPC {
					t.Fatalf("write after the dropped pages: %d, %v, want ENOSPC", n, err)
				}
				mustOK(t, "close g", c.Close(g))
			case "truncate-while-full":
				// The held pages do not stop a change of mode, nor a
				// truncation that cuts them: the way to free space.
				mustOK(t, "chmod", c.Setattr("f", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o600}))
				mustOK(t, "truncate below the refused pages", c.Ftruncate(h, 512<<10))
				if d := dirtyBytes(c); d != 0 {
					t.Fatalf("%d dirty bytes after the truncation cut them", d)
				}
				data = data[:512<<10]
				if got := hostBytes(t, filepath.Join(dir, "f")); !bytes.Equal(got, data) {
					t.Fatalf("after the truncation the store has %d bytes of f, want %d", len(got), len(data))
				}
				// The space freed lets a write be held back again.
				more := randomBytes(9, 64<<10)
				if n, err := c.WriteAt(h, more, int64(len(data))); n != len(more) || err != nil {
					t.Fatalf("write after the truncation freed space: %d, %v", n, err)
				}
				if d := dirtyBytes(c); d != int64(len(more)) {
					t.Fatalf("%d bytes held back after the truncation freed space, want %d", d, len(more))
				}
				data = append(data, more...)
				mustOK(t, "close f", c.Close(h))
				if got := hostBytes(t, filepath.Join(dir, "f")); !bytes.Equal(got, data) {
					t.Fatalf("after close the store has %d bytes of f, %d acknowledged", len(got), len(data))
				}
			default:
				mustOK(t, "unlink filler", c.Unlink("filler"))
				mustOK(t, "fsync after space was freed", c.Fsync(h))
				mustOK(t, "close f", c.Close(h))
				if got := hostBytes(t, filepath.Join(dir, "f")); !bytes.Equal(got, data) {
					t.Fatalf("after the fsync the store has %d bytes of f, %d acknowledged", len(got), len(data))
				}
			}
			if d := dirtyBytes(c); d != 0 {
				t.Fatalf("%d dirty bytes counted after the last close", d)
			}
			mustOK(t, "close cache", c.CloseFS())
			fresh, _ := spaceCache(t, dir)
			stored = hostBytes(t, filepath.Join(dir, "f"))
			if got := readAll(t, fresh, "f"); !bytes.Equal(got, stored) {
				t.Fatalf("a fresh cache reads %d bytes of f, the store has %d", len(got), len(stored))
			}
			if got := readAll(t, fresh, "synced"); !bytes.Equal(got, synced) {
				t.Fatal("the fsynced file changed")
			}
		})
	}
}

// quotaFS is a store with a user quota that its Statfs does not show, as a
// usrquota on ext4 or XFS: a write takes what fits under limit bytes (a short
// count, as the kernel gives) and then fails with EDQUOT, while Statfs reports
// the free space of the filesystem underneath. (This host's kernel is built
// without CONFIG_QUOTA, so no real quota can be mounted here.)
type quotaFS struct {
	*memfs.FS
	limit int64
}

func (q *quotaFS) WriteAt(h libservices.Handle, p []byte, off int64) (int, error) {
	var st libservices.Statfs
	q.FS.Statfs(&st)
	room := q.limit - int64(st.Blocks-st.Bfree)*st.Bsize
	if room <= 0 && len(p) > 0 {
		return 0, syscall.EDQUOT
	}
	if int64(len(p)) > room {
		p = p[:room]
	}
	return q.FS.WriteAt(h, p, off)
}

// TestSpaceHiddenQuota: a store that refuses with EDQUOT while its Statfs
// shows room. The first refusal comes at a flush (the cache could not see the
// quota), in the middle of a page; it is reported at fsync, the store's size
// covers only what it took, and from then on the cache writes through, so
// that every later write the quota refuses fails at write with EDQUOT. Once
// the quota is raised, fsync writes everything acknowledged, the page the
// quota cut in two included; once space is freed below, writes are held back
// again.
func TestSpaceHiddenQuota(t *testing.T) {
	m := memfs.New(memfs.Options{Size: 64 << 20})
	q := &quotaFS{FS: m, limit: 1<<20 + 2048}
	c := New(q, NewStore(1<<20), Options{Policy: "writeback", FlushInterval: -1, DirtyLimit: 256 << 10})
	defer c.CloseFS()
	h, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create", err)
	data := randomBytes(8, 2<<20)
	acked, err := appendUntilFull(t, c, h, data, 64<<10)
	if err != syscall.EDQUOT {
		t.Fatalf("2 MiB into a 1 MiB quota: %d acknowledged, then %v, want EDQUOT", acked, err)
	}
	// What was acknowledged beyond the quota is at most what the dirty limit
	// let the cache hold before its first flush met the quota.
	if over := int64(acked) - q.limit; over > 256<<10+64<<10 {
		t.Fatalf("%d bytes acknowledged past the quota", over)
	}
	for i := 0; i < 3; i++ {
		if n, err := c.WriteAt(h, data[acked:acked+PageSize], int64(acked)); n != 0 || err != syscall.EDQUOT {
			t.Fatalf("write after the quota refused: %d, %v, want EDQUOT", n, err)
		}
	}
	stored := readAll(t, m, "f")
	if int64(len(stored)) >= int64(acked) || !bytes.Equal(stored, data[:len(stored)]) {
		t.Fatalf("the store has %d bytes of f, not a prefix of the %d acknowledged that ends in the quota", len(stored), acked)
	}
	if err := c.Fsync(h); err != syscall.EDQUOT {
		t.Fatalf("fsync with %d bytes refused by the quota: %v, want EDQUOT", acked-len(stored), err)
	}
	if got := readAll(t, c, "f"); !bytes.Equal(got, data[:acked]) {
		t.Fatalf("through the cache f reads %d bytes, %d acknowledged and held", len(got), acked)
	}
	q.limit = 64 << 20
	mustOK(t, "fsync once the quota is raised", c.Fsync(h))
	mustOK(t, "close", c.Close(h))
	if got := readAll(t, m, "f"); !bytes.Equal(got, data[:acked]) {
		t.Fatalf("the store has %d bytes of f, %d acknowledged", len(got), acked)
	}

	// Unlinking f frees space the store's Statfs sees.
	mustOK(t, "unlink", c.Unlink("f"))
	g, err := c.Open("g", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create g", err)
	small := data[:64<<10]
	if n, err := c.WriteAt(g, small, 0); n != len(small) || err != nil {
		t.Fatalf("write after space was freed: %d, %v", n, err)
	}
	if d := dirtyBytes(c); d != int64(len(small)) {
		t.Fatalf("%d bytes held back after space was freed, want %d", d, len(small))
	}
	mustOK(t, "close g", c.Close(g))
	if got := readAll(t, m, "g"); !bytes.Equal(got, small) {
		t.Fatalf("the store has %d bytes of g", len(got))
	}
}

// statfsCounter counts the Statfs calls that reach the store.
type statfsCounter struct {
	*memfs.FS
	calls int
}

func (s *statfsCounter) Statfs(st *libservices.Statfs) error {
	s.calls++
	return s.FS.Statfs(st)
}

// TestSpaceReadsFreeSpaceRarely: far from full, held-back writes do not ask
// the store for its free space each time: once at the first, then as the
// reservation passes half of the room left.
func TestSpaceReadsFreeSpaceRarely(t *testing.T) {
	s := &statfsCounter{FS: memfs.New(memfs.Options{Size: 64 << 20})}
	c := New(s, NewStore(1<<20), wbOptions())
	h, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create", err)
	defer c.Close(h)
	buf := make([]byte, PageSize)
	const pages = 40 << 20 / PageSize
	for i := range pages {
		if _, err := c.WriteAt(h, buf, int64(i)*PageSize); err != nil {
			t.Fatal(err)
		}
	}
	if d := dirtyBytes(c); d != pages*PageSize {
		t.Fatalf("%d bytes held back of 40 MiB written into 64 MiB", d)
	}
	// Room 63.5 MiB at the first write: read again at 31.75 MiB, next at 47.6.
	if s.calls != 2 {
		t.Fatalf("%d Statfs calls for %d held-back writes, want 2", s.calls, pages)
	}
}

// TestSpaceStatfs: the cache's Statfs does not offer what it holds back.
func TestSpaceStatfs(t *testing.T) {
	m := memfs.New(memfs.Options{Size: 1 << 20})
	c := New(m, NewStore(1<<20), wbOptions())
	var before, held libservices.Statfs
	mustOK(t, "statfs", c.Statfs(&before))
	h, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create", err)
	_, err = c.WriteAt(h, make([]byte, 10*PageSize), 0)
	mustOK(t, "write", err)
	mustOK(t, "statfs", c.Statfs(&held))
	if before.Bavail-held.Bavail != 10 || before.Bfree-held.Bfree != 10 {
		t.Fatalf("10 pages held back: free %d then %d, available %d then %d", before.Bfree, held.Bfree, before.Bavail, held.Bavail)
	}
	mustOK(t, "close", c.Close(h))
	mustOK(t, "statfs", c.Statfs(&held))
	if before.Bavail-held.Bavail != 10 {
		t.Fatalf("10 pages written: available %d then %d", before.Bavail, held.Bavail)
	}
}

// TestSpaceFarWriteThrough: a write that ends past maxHeldEnd is not held
// back, so that the store decides EFBIG at write.
func TestSpaceFarWriteThrough(t *testing.T) {
	m := memfs.New(memfs.Options{})
	c := New(m, NewStore(1<<20), wbOptions())
	h, err := c.Open("f", libservices.O_RDWR|libservices.O_CREAT, 0o644)
	mustOK(t, "create", err)
	defer c.Close(h)
	if _, err := c.WriteAt(h, []byte("far"), memfs.MaxFileSize); err != syscall.EFBIG {
		t.Fatalf("write past memfs's largest file: %v, want EFBIG at write", err)
	}
	if _, err := c.WriteAt(h, []byte("far"), maxHeldEnd); err != nil {
		t.Fatalf("write at 1 TiB: %v", err)
	}
	if d := dirtyBytes(c); d != 0 {
		t.Fatalf("%d bytes held back of a write past maxHeldEnd", d)
	}
}
