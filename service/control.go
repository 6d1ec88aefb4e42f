package service

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/libservices"
)

// The control socket (Config.Control) is how serve's elasticity watches and moves
// a running service: one JSON request per connection line, one JSON answer line.
// Only root may use it when a privileged parent started the service (serve:
// the service's uid is the tenant's, and the tenant must not resize its own
// service); root and the service's own uid for a service a user runs for
// itself (SO_PEERCRED, and the socket is 0600): a tenant may read its status
// over the direct path.
//
//	{"op":"ping"}                       -> {"value":SERVED,"pending":N}
//	{"op":"ping","value":BOUND_NS}      -> ... "stuck":N,"stuck_for_ns":NS
//	{"op":"status"}                     -> {"status":{...Status...}}
//	{"op":"set_workers","value":N}      -> {"value":N}   (SetWorkers)
//	{"op":"set_cache_bytes","value":N}  -> {"value":SET} (ResizeCaches)
//
// An error answers {"error":"..."}.

// ControlRequest is one request on the control socket.
type ControlRequest struct {
	Op    string `json:"op"`
	Value int64  `json:"value,omitempty"`
}

// ControlReply answers a ControlRequest.
type ControlReply struct {
	Error  string  `json:"error,omitempty"`
	Value  int64   `json:"value,omitempty"`
	Status *Status `json:"status,omitempty"`
	// Pending (ping) is how many requests wait in the ring.
	Pending int64 `json:"pending,omitempty"`
	// Stuck (ping with a bound) is how many workers have been inside one
	// request for at least the bound, and StuckForNs the longest stay seen
	// (back.Service.StuckWorkers).
	Stuck      int   `json:"stuck,omitempty"`
	StuckForNs int64 `json:"stuck_for_ns,omitempty"`
}

// Control operations.
const (
	// ControlPing is serve's health check: it answers at once, from the
	// control goroutine, with the requests served so far (Value) and those
	// waiting (Pending), without gathering the metrics a status does. A
	// positive Value in the request is a bound in nanoseconds: the reply then
	// also counts the workers stuck in one request for that long (Stuck).
	ControlPing          = "ping"
	ControlStatus        = "status"
	ControlSetWorkers    = "set_workers"
	ControlSetCacheBytes = "set_cache_bytes"
)

// cacheResizer is a libservice whose page cache can be resized at run time
// (libservices/cache.FS).
type cacheResizer interface {
	CacheSize() int64
	CacheMaxSize() int64
	ResizeCache(sizeBytes int64) int64
}

// SetWorkers changes the number of back-driver workers (1..256).
func (s *Service) SetWorkers(n int) (int, error) { return s.back.SetWorkers(n) }

// caches are the resizable caches of every instance, top first.
func (s *Service) caches() []cacheResizer {
	var out []cacheResizer
	for _, in := range s.insts {
		walk(in.fs, func(fs libservices.FS) {
			if c, ok := fs.(cacheResizer); ok {
				out = append(out, c)
			}
		})
	}
	return out
}

// ResizeCaches gives every resizable cache of the service the budget sizeBytes
// (each clamped to its own bounds) and returns the largest budget set, 0 when the
// service has no resizable cache.
func (s *Service) ResizeCaches(sizeBytes int64) int64 {
	var set int64
	for _, c := range s.caches() {
		set = max(set, c.ResizeCache(sizeBytes))
	}
	return set
}

func (s *Service) serveControl(ln *net.UnixListener) {
	defer s.ctlWG.Done()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		s.ctlMu.Lock()
		if s.ctlClosed {
			s.ctlMu.Unlock()
			conn.Close()
			return
		}
		if s.ctlConns == nil {
			s.ctlConns = map[*net.UnixConn]struct{}{}
		}
		s.ctlConns[conn] = struct{}{}
		s.ctlMu.Unlock()
		s.ctlWG.Add(1)
		go func() {
			defer s.ctlWG.Done()
			defer func() {
				s.ctlMu.Lock()
				delete(s.ctlConns, conn)
				s.ctlMu.Unlock()
				conn.Close()
			}()
			if err := s.controlPeer(conn); err != nil {
				s.log.Warn("control socket: refused", zap.Error(err))
				return
			}
			s.controlConn(conn)
		}()
	}
}

func (s *Service) controlPeer(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	for _, u := range s.ctlUIDs {
		if cred.Uid == u {
			return nil
		}
	}
	return fmt.Errorf("uid %d (pid %d) may not control the service", cred.Uid, cred.Pid)
}

func (s *Service) controlConn(conn *net.UnixConn) {
	r := bufio.NewReader(conn)
	enc := json.NewEncoder(conn)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var req ControlRequest
		var rep ControlReply
		if err := json.Unmarshal(line, &req); err != nil {
			rep.Error = "bad request: " + err.Error()
		} else {
			rep = s.control(req)
		}
		if err := enc.Encode(&rep); err != nil {
			return
		}
	}
}

func (s *Service) control(req ControlRequest) ControlReply {
	switch req.Op {
	case ControlPing:
		bs := s.back.Stats()
		rep := ControlReply{Value: bs.Served, Pending: int64(s.back.QueueLen())}
		if req.Value > 0 {
			n, longest := s.back.StuckWorkers(time.Duration(req.Value))
			rep.Stuck, rep.StuckForNs = n, int64(longest)
		}
		return rep
	case ControlStatus:
		st := s.Status()
		return ControlReply{Status: &st}
	case ControlSetWorkers:
		n, err := s.SetWorkers(int(req.Value))
		if err != nil {
			return ControlReply{Error: err.Error()}
		}
		s.log.Info("workers set", zap.Int("workers", n))
		return ControlReply{Value: int64(n)}
	case ControlSetCacheBytes:
		if req.Value <= 0 {
			return ControlReply{Error: fmt.Sprintf("cache size %d: must be positive", req.Value)}
		}
		if len(s.caches()) == 0 {
			return ControlReply{Error: "no resizable cache in this service"}
		}
		set := s.ResizeCaches(req.Value)
		s.log.Info("caches resized", zap.Int64("bytes", set))
		return ControlReply{Value: set}
	}
	return ControlReply{Error: fmt.Sprintf("unknown op %q", req.Op)}
}

// ControlClient talks to a service's control socket. Not safe for concurrent
// use.
type ControlClient struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

// DialControl connects to a control socket.
func DialControl(path string) (*ControlClient, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &ControlClient{conn: c, r: bufio.NewReader(c)}, nil
}

// Close closes the connection.
func (c *ControlClient) Close() error { return c.conn.Close() }

// Do sends one request and reads its answer (within timeout).
func (c *ControlClient) Do(req ControlRequest, timeout time.Duration) (ControlReply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	b, _ := json.Marshal(req)
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return ControlReply{}, err
	}
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		return ControlReply{}, err
	}
	var rep ControlReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return ControlReply{}, fmt.Errorf("control reply: %w", err)
	}
	if rep.Error != "" {
		return rep, errors.New("service: " + rep.Error)
	}
	return rep, nil
}

// removeStaleSocket removes a socket of type network ("unix", "unixpacket")
// nobody listens on (a killed service's); anything else at the path is an
// error.
func removeStaleSocket(path, network string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("service: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout(network, path, 100*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("service: a service already listens on %s", path)
	}
	return os.Remove(path)
}
