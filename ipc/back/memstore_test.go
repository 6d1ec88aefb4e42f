package back

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/ipc/shm"
	"github.com/polytropon/polytropon/ipc/wire"
)

// memStore is a small in-memory filesystem behind the Handler interface: a flat map
// of absolute paths to nodes, handles resolving to node numbers. The tests use it to
// check that data really travels both ways through the transport, and that a client's
// handles are released when it goes away.
type memStore struct {
	mu    sync.Mutex
	nodes map[string]*memNode
	byIno map[uint64]*memNode
	next  uint64
	// open counts live handles over all clients (checked back at baseline after
	// clients die).
	open atomic.Int64
	// fsyncDelay makes fsync slow, so a test can have a request in flight when it
	// kills a process.
	fsyncDelay time.Duration
}

type memNode struct {
	ino   uint64
	dir   bool
	mode  uint32
	data  []byte
	mtime int64
}

func newMemStore() *memStore {
	m := &memStore{nodes: map[string]*memNode{}, byIno: map[uint64]*memNode{}, next: 1}
	root := &memNode{ino: m.next, dir: true, mode: 0o755}
	m.next++
	m.nodes["/"] = root
	m.byIno[root.ino] = root
	return m
}

var _ Handler = (*memStore)(nil)

func parent(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func cleanPath(b []byte) (string, int32) {
	p := string(b) // a private copy: the client may change its buffer meanwhile
	if len(p) == 0 || p[0] != '/' || strings.Contains(p, "//") || strings.IndexByte(p, 0) >= 0 {
		return "", -int32(syscall.EINVAL)
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return p, 0
}

func (m *memStore) createLocked(p string, dir bool, mode uint32) (*memNode, int32) {
	if _, ok := m.nodes[p]; ok {
		return nil, -int32(syscall.EEXIST)
	}
	if par, ok := m.nodes[parent(p)]; !ok || !par.dir {
		return nil, -int32(syscall.ENOENT)
	}
	n := &memNode{ino: m.next, dir: dir, mode: mode, mtime: time.Now().UnixNano()}
	m.next++
	m.nodes[p] = n
	m.byIno[n.ino] = n
	return n, 0
}

func (m *memStore) stat(n *memNode, b []byte) {
	st := wire.Stat{Ino: n.ino, Size: int64(len(n.data)), MtimeSec: n.mtime / 1e9, MtimeNsec: uint32(n.mtime % 1e9), Mode: n.mode, Nlink: 1}
	if n.dir {
		st.Mode |= syscall.S_IFDIR
	} else {
		st.Mode |= syscall.S_IFREG
	}
	st.Put(b)
}

func (m *memStore) newHandle(c *ClientCtx, n *memNode, d *wire.Desc) int32 {
	h, errno := c.NewHandle(n.ino)
	if errno != 0 {
		return -int32(errno)
	}
	m.open.Add(1)
	d.Result = h
	return 0
}

func (m *memStore) Handle(c *ClientCtx, d *wire.Desc, data []byte) int32 {
	switch d.Op {
	case wire.OpStat, wire.OpOpen, wire.OpCreate, wire.OpMkdir, wire.OpUnlink, wire.OpRmdir:
		p, errno := cleanPath(data[:d.Aux])
		if errno != 0 {
			return errno
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		n := m.nodes[p]
		switch d.Op {
		case wire.OpStat:
			if n == nil {
				return -int32(syscall.ENOENT)
			}
			m.stat(n, data)
			return wire.StatSize
		case wire.OpOpen:
			if n == nil {
				if d.Flags&syscall.O_CREAT == 0 {
					return -int32(syscall.ENOENT)
				}
				var e int32
				if n, e = m.createLocked(p, false, d.Mode); e != 0 {
					return e
				}
			} else if d.Flags&(syscall.O_CREAT|syscall.O_EXCL) == syscall.O_CREAT|syscall.O_EXCL {
				return -int32(syscall.EEXIST)
			}
			if d.Flags&syscall.O_DIRECTORY != 0 && !n.dir {
				return -int32(syscall.ENOTDIR)
			}
			if n.dir && d.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
				return -int32(syscall.EISDIR)
			}
			if d.Flags&syscall.O_TRUNC != 0 {
				n.data = n.data[:0]
			}
			return m.newHandle(c, n, d)
		case wire.OpCreate:
			n, e := m.createLocked(p, false, d.Mode)
			if e != 0 {
				return e
			}
			return m.newHandle(c, n, d)
		case wire.OpMkdir:
			_, e := m.createLocked(p, true, d.Mode)
			return e
		case wire.OpUnlink, wire.OpRmdir:
			if n == nil {
				return -int32(syscall.ENOENT)
			}
			if d.Op == wire.OpUnlink && n.dir {
				return -int32(syscall.EISDIR)
			}
			if d.Op == wire.OpRmdir {
				if !n.dir {
					return -int32(syscall.ENOTDIR)
				}
				for q := range m.nodes {
					if q != p && parent(q) == p {
						return -int32(syscall.ENOTEMPTY)
					}
				}
			}
			delete(m.nodes, p) // the inode lives on while handles hold it
			return 0
		}
	case wire.OpRename:
		from, e1 := cleanPath(data[:d.Aux])
		to, e2 := cleanPath(data[d.Aux:d.Length])
		if e1 != 0 || e2 != 0 {
			return -int32(syscall.EINVAL)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		n := m.nodes[from]
		if n == nil {
			return -int32(syscall.ENOENT)
		}
		if par, ok := m.nodes[parent(to)]; !ok || !par.dir {
			return -int32(syscall.ENOENT)
		}
		delete(m.nodes, from)
		m.nodes[to] = n
		return 0
	}
	// Handle ops: the service has checked that d.Handle is the client's own.
	ino, ok := c.Object(d.Handle)
	if !ok {
		return -int32(syscall.EBADF)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.byIno[ino]
	if n == nil {
		return -int32(syscall.EBADF)
	}
	switch d.Op {
	case wire.OpRead:
		if n.dir {
			return -int32(syscall.EISDIR)
		}
		if d.Offset >= uint64(len(n.data)) {
			return 0
		}
		return int32(shm.CopyData(data, n.data[d.Offset:]))
	case wire.OpWrite:
		if n.dir {
			return -int32(syscall.EISDIR)
		}
		end := d.Offset + uint64(d.Length)
		if end > 1<<30 {
			return -int32(syscall.EFBIG)
		}
		if end > uint64(len(n.data)) {
			n.data = append(n.data, make([]byte, end-uint64(len(n.data)))...)
		}
		n.mtime = time.Now().UnixNano()
		return int32(shm.CopyData(n.data[d.Offset:end], data))
	case wire.OpTruncate:
		if d.Offset > 1<<30 {
			return -int32(syscall.EFBIG)
		}
		if d.Offset <= uint64(len(n.data)) {
			n.data = n.data[:d.Offset]
		} else {
			n.data = append(n.data, make([]byte, d.Offset-uint64(len(n.data)))...)
		}
		return 0
	case wire.OpFstat:
		m.stat(n, data)
		return wire.StatSize
	case wire.OpFsync:
		if m.fsyncDelay > 0 {
			m.mu.Unlock()
			time.Sleep(m.fsyncDelay)
			m.mu.Lock()
		}
		return 0
	case wire.OpClose:
		if _, ok := c.ReleaseHandle(d.Handle); !ok {
			return -int32(syscall.EBADF)
		}
		m.open.Add(-1)
		return 0
	case wire.OpReaddir:
		if !n.dir {
			return -int32(syscall.ENOTDIR)
		}
		var dirPath string
		for p, x := range m.nodes {
			if x == n {
				dirPath = p
			}
		}
		var names []string
		for p := range m.nodes {
			if p != dirPath && parent(p) == dirPath {
				names = append(names, p[strings.LastIndexByte(p, '/')+1:])
			}
		}
		slices.Sort(names)
		used := 0
		i := d.Offset
		for ; i < uint64(len(names)); i++ {
			typ := uint8(syscall.DT_REG)
			if m.nodes[joinPath(dirPath, names[i])].dir {
				typ = syscall.DT_DIR
			}
			k := wire.PutDirent(data[used:], names[i], typ, 0)
			if k == 0 {
				break
			}
			used += k
		}
		d.Result = i
		return int32(used)
	}
	return -int32(syscall.ENOSYS)
}

func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func (m *memStore) ClientGone(c *ClientCtx) {
	c.Handles(func(h, obj uint64) { m.open.Add(-1) })
}
