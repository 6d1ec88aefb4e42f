//go:build ceph

package rbd

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/ceph/go-ceph/rados"
	gorbd "github.com/ceph/go-ceph/rbd"

	"github.com/polytropon/polytropon/blockdev"
)

// Device is an open RBD image.
type Device struct {
	mu     sync.RWMutex // shared by every operation, exclusive in Close
	closed bool
	conn   *rados.Conn
	ioctx  *rados.IOContext
	img    *gorbd.Image
	name   string
	size   int64
}

var _ blockdev.Device = (*Device)(nil)

// connect reaches the cluster and opens the pool.
func connect(c Options) (*rados.Conn, *rados.IOContext, error) {
	conn, err := rados.NewConnWithUser(c.ClientID)
	if err != nil {
		return nil, nil, fmt.Errorf("rbd: client %q: %w", c.ClientID, err)
	}
	fail := func(what string, err error) (*rados.Conn, *rados.IOContext, error) {
		conn.Shutdown()
		return nil, nil, fmt.Errorf("rbd: %s: %w", what, err)
	}
	if err := conn.ReadConfigFile(c.Conf); err != nil {
		return fail("read conf "+c.Conf, err)
	}
	secs := strconv.Itoa(max(1, int(c.ConnectTimeout.Seconds()+0.5)))
	opts := [][2]string{{"client_mount_timeout", secs}, {"rados_mon_op_timeout", secs}}
	if c.Keyring != "" {
		opts = append(opts, [2]string{"keyring", c.Keyring})
	}
	for _, kv := range opts {
		if err := conn.SetConfigOption(kv[0], kv[1]); err != nil {
			return fail("set "+kv[0], err)
		}
	}
	if err := conn.Connect(); err != nil {
		mon, _ := conn.GetConfigOption("mon_host")
		return fail(fmt.Sprintf("connect to %s as client.%s via the monitors at %s (timeout %v)", c.Conf, c.ClientID, mon, c.ConnectTimeout), err)
	}
	ioctx, err := conn.OpenIOContext(c.Pool)
	if err != nil {
		return fail("open pool "+c.Pool, err)
	}
	return conn, ioctx, nil
}

func create(ioctx *rados.IOContext, name string, size int64) error {
	opts := gorbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(gorbd.ImageOptionOrder, 22); err != nil {
		return err
	}
	if err := opts.SetUint64(gorbd.ImageOptionFeatures, gorbd.FeatureLayering|gorbd.FeatureExclusiveLock); err != nil {
		return err
	}
	return gorbd.CreateImage(ioctx, name, uint64(size), opts)
}

// Create makes a new image of size bytes (EEXIST if it exists).
func Create(o Options, size int64) error {
	c, err := o.withDefaults()
	if err != nil {
		return err
	}
	if size <= 0 || size%BlockSize != 0 {
		return fmt.Errorf("rbd: create %s: size %d is not a positive multiple of %d", c.Image, size, BlockSize)
	}
	conn, ioctx, err := connect(c)
	if err != nil {
		return err
	}
	defer conn.Shutdown()
	defer ioctx.Destroy()
	if err := create(ioctx, c.Image, size); err != nil {
		return fmt.Errorf("rbd: create %s/%s: %w", c.Pool, c.Image, err)
	}
	return nil
}

// Resize sets the size of an image that is not open here; devices open on it
// keep their size until opened again.
func Resize(o Options, size int64) error {
	c, err := o.withDefaults()
	if err != nil {
		return err
	}
	if size <= 0 || size%BlockSize != 0 {
		return fmt.Errorf("rbd: resize %s: size %d is not a positive multiple of %d", c.Image, size, BlockSize)
	}
	conn, ioctx, err := connect(c)
	if err != nil {
		return err
	}
	defer conn.Shutdown()
	defer ioctx.Destroy()
	img, err := gorbd.OpenImage(ioctx, c.Image, gorbd.NoSnapshot)
	if err != nil {
		return fmt.Errorf("rbd: open %s/%s: %w", c.Pool, c.Image, err)
	}
	defer img.Close()
	if err := img.Resize(uint64(size)); err != nil {
		return fmt.Errorf("rbd: resize %s/%s to %d: %w", c.Pool, c.Image, size, err)
	}
	return nil
}

// Remove deletes an image.
func Remove(o Options) error {
	c, err := o.withDefaults()
	if err != nil {
		return err
	}
	conn, ioctx, err := connect(c)
	if err != nil {
		return err
	}
	defer conn.Shutdown()
	defer ioctx.Destroy()
	if err := gorbd.RemoveImage(ioctx, c.Image); err != nil {
		return fmt.Errorf("rbd: remove %s/%s: %w", c.Pool, c.Image, err)
	}
	return nil
}

// Open opens (with CreateSize, first creates) the image as a Device.
func Open(o Options) (blockdev.Device, error) {
	c, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	conn, ioctx, err := connect(c)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (blockdev.Device, error) {
		ioctx.Destroy()
		conn.Shutdown()
		return nil, err
	}
	open := func() (*gorbd.Image, error) {
		if c.ReadOnly {
			return gorbd.OpenImageReadOnly(ioctx, c.Image, gorbd.NoSnapshot)
		}
		return gorbd.OpenImage(ioctx, c.Image, gorbd.NoSnapshot)
	}
	img, err := open()
	if errors.Is(err, gorbd.ErrNotFound) && c.CreateSize > 0 {
		if err := create(ioctx, c.Image, c.CreateSize); err != nil {
			return fail(fmt.Errorf("rbd: create %s/%s: %w", c.Pool, c.Image, err))
		}
		img, err = open()
	}
	if err != nil {
		return fail(fmt.Errorf("rbd: open %s/%s: %w", c.Pool, c.Image, err))
	}
	size, err := img.GetSize()
	if err != nil {
		img.Close()
		return fail(fmt.Errorf("rbd: size of %s/%s: %w", c.Pool, c.Image, err))
	}
	return &Device{conn: conn, ioctx: ioctx, img: img, name: c.Pool + "/" + c.Image, size: int64(size) &^ (BlockSize - 1)}, nil
}

// ReadAt implements blockdev.Device.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	n, err := blockdev.ClampRead(p, off, BlockSize, d.size)
	if err != nil {
		return 0, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, blockdev.ErrClosed
	}
	if n == 0 {
		return 0, io.EOF
	}
	got, err := d.img.ReadAt(p[:n], off)
	if err != nil && !(err == io.EOF && got == n) {
		return got, fmt.Errorf("rbd: read %s at %d: %w", d.name, off, err)
	}
	return blockdev.ShortRead(n, len(p))
}

// WriteAt implements blockdev.Device.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	if err := blockdev.CheckWrite(p, off, BlockSize, d.size); err != nil {
		return 0, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, blockdev.ErrClosed
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := d.img.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("rbd: write %s at %d: %w", d.name, off, err)
	}
	return n, nil
}

// Flush implements blockdev.Device.
func (d *Device) Flush() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return blockdev.ErrClosed
	}
	if err := d.img.Flush(); err != nil {
		return fmt.Errorf("rbd: flush %s: %w", d.name, err)
	}
	return nil
}

// Size implements blockdev.Device.
func (d *Device) Size() int64 { return d.size }

// BlockSize implements blockdev.Device.
func (d *Device) BlockSize() int { return BlockSize }

// OptimalIOSize implements blockdev.Device.
func (d *Device) OptimalIOSize() int { return OptimalIOSize }

// Close implements blockdev.Device: it waits for calls in progress, then closes
// the image and the cluster connection.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return blockdev.ErrClosed
	}
	d.closed = true
	err := d.img.Close()
	d.ioctx.Destroy()
	d.conn.Shutdown()
	if err != nil {
		return fmt.Errorf("rbd: close %s: %w", d.name, err)
	}
	return nil
}

// NewQueue implements blockdev.Device.
func (d *Device) NewQueue(depth int) (blockdev.Queue, error) {
	if depth < 1 || depth > 1024 {
		return nil, fmt.Errorf("rbd: queue depth %d: want 1..1024 (one goroutine per slot)", depth)
	}
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	if closed {
		return nil, blockdev.ErrClosed
	}
	q := &Queue{d: d, reqs: make(chan blockdev.Request, depth), comps: make(chan blockdev.Completion, depth), depth: depth}
	q.wg.Add(depth)
	for range depth {
		go q.worker()
	}
	return q, nil
}

// Queue runs up to Depth requests at once on worker goroutines.
type Queue struct {
	d        *Device
	reqs     chan blockdev.Request
	comps    chan blockdev.Completion
	depth    int
	inFlight int // owner only
	closed   bool
	wg       sync.WaitGroup
}

var _ blockdev.Queue = (*Queue)(nil)

func (q *Queue) worker() {
	defer q.wg.Done()
	for r := range q.reqs {
		c := blockdev.Completion{Cookie: r.Cookie}
		switch r.Op {
		case blockdev.OpRead:
			c.N, c.Err = q.d.ReadAt(r.Buf, r.Off)
			if c.Err == io.EOF {
				c.Err = nil
			}
		case blockdev.OpWrite:
			c.N, c.Err = q.d.WriteAt(r.Buf, r.Off)
		case blockdev.OpFlush:
			c.Err = q.d.Flush()
		}
		q.comps <- c
	}
}

// Submit implements blockdev.Queue.
func (q *Queue) Submit(reqs []blockdev.Request) (int, error) {
	if q.closed {
		return 0, blockdev.ErrClosed
	}
	q.d.mu.RLock()
	closed := q.d.closed
	q.d.mu.RUnlock()
	if closed {
		return 0, blockdev.ErrClosed
	}
	for i, r := range reqs {
		if q.inFlight == q.depth {
			return i, nil
		}
		switch r.Op {
		case blockdev.OpRead:
			if err := blockdev.CheckAligned(r.Buf, r.Off, BlockSize); err != nil {
				return i, err
			}
		case blockdev.OpWrite:
			if err := blockdev.CheckWrite(r.Buf, r.Off, BlockSize, q.d.size); err != nil {
				return i, err
			}
		case blockdev.OpFlush:
		default:
			return i, fmt.Errorf("rbd: request %d has unknown %v", i, r.Op)
		}
		q.reqs <- r // never blocks: the channel holds depth and inFlight < depth
		q.inFlight++
	}
	return len(reqs), nil
}

// Poll implements blockdev.Queue.
func (q *Queue) Poll(min int, out []blockdev.Completion) (int, error) {
	min = max(0, minInt(min, q.inFlight, len(out)))
	k := 0
	for k < min {
		out[k] = <-q.comps
		k++
	}
	for k < len(out) && k < q.inFlight {
		select {
		case c := <-q.comps:
			out[k] = c
			k++
		default:
			q.inFlight -= k
			return k, nil
		}
	}
	q.inFlight -= k
	return k, nil
}

func minInt(a, b, c int) int { return min(a, min(b, c)) }

// Depth implements blockdev.Queue.
func (q *Queue) Depth() int { return q.depth }

// InFlight implements blockdev.Queue.
func (q *Queue) InFlight() int { return q.inFlight }

// Close implements blockdev.Queue: it waits for the requests in flight and
// stops the workers.
func (q *Queue) Close() error {
	if q.closed {
		return blockdev.ErrClosed
	}
	q.closed = true
	for ; q.inFlight > 0; q.inFlight-- {
		<-q.comps
	}
	close(q.reqs)
	q.wg.Wait()
	return nil
}
