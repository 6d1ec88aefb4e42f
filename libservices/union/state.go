package union

import (
	lru "container/list"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/polytropon/polytropon/libservices"
)

// nameEnt is what union knows about one name of a directory of the merged view.
// The zero value (layer -1 aside) is a name no branch has.
type nameEnt struct {
	layer   int    // topmost branch that shows the name; -1 if none does
	typ     uint32 // S_IFMT bits of that branch's entry
	upperWh bool   // the upper branch holds a whiteout for the name
	lower   bool   // a branch below the upper one shows the name (whiteouts below counted, the upper's not): removing it needs a whiteout
	dirs    []int  // for a directory: the branches where the name is a directory, top first, before any opaque marker cuts them
}

func absent() nameEnt { return nameEnt{layer: -1} }

func (e *nameEnt) exists() bool { return e.layer >= 0 }
func (e *nameEnt) isDir() bool  { return e.exists() && e.typ == syscall.S_IFDIR }
func (e *nameEnt) isLink() bool { return e.exists() && e.typ == syscall.S_IFLNK }

// dirState is the merge state of one directory: its branches and every name
// they hold, built by listing the directory in each branch.
type dirState struct {
	path string
	cand []int // the branches the parent found the directory in (the key it was built for)

	// Set at build, then read-only.
	layers  []int // cand cut after the first branch with an opaque marker
	big     bool  // too many names to keep: lookups probe the branches
	expires int64 // f.clock() after which the state is rebuilt
	size    int   // names kept (for the bound)
	elem    *lru.Element

	// mu guards the fields below.
	mu    sync.Mutex
	names map[string]nameEnt
	seq   uint64 // changes each time names changes or the state is invalidated
	dead  bool   // invalidated: rebuild before the next use
}

func (s *dirState) get(base string) (nameEnt, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.names[base]
	if !ok {
		e = absent()
	}
	return e, s.seq
}

// set records a change this union made to the directory.
func (s *dirState) set(base string, e nameEnt) {
	if s == nil || s.big {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !e.exists() && !e.upperWh && !e.lower {
		delete(s.names, base)
	} else {
		s.names[base] = e
	}
	s.seq++
}

func (s *dirState) usable(now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.dead && now < s.expires
}

// dirRef is a directory reached by a lookup: its canonical path, its merged
// branches, and the state that answers for its names (nil: probe the branches).
type dirRef struct {
	path   string
	cand   []int
	layers []int
	st     *dirState
}

// cacheOn says whether merge state is kept at all (Options.DirCacheTimeout > 0).
func (f *FS) cacheOn() bool { return f.timeout > 0 }

// dirLock returns the lock that serialises the changes union makes to
// directory p (and the listing that builds p's state) with each other. Locks
// are striped by path so that they need no bookkeeping; two directories may
// share one, which only serialises them.
func (f *FS) dirLock(p string) *sync.Mutex {
	return &f.locks[maphash.String(f.seed, p)%uint64(len(f.locks))]
}

// lockDirs takes the locks of several directories in stripe order (the one
// place two are held at once) and returns the function that releases them.
func (f *FS) lockDirs(paths ...string) func() {
	idx := make([]int, 0, len(paths))
	for _, p := range paths {
		idx = append(idx, int(maphash.String(f.seed, p)%uint64(len(f.locks))))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		f.locks[i].Lock()
	}
	return func() {
		for j := len(idx) - 1; j >= 0; j-- {
			f.locks[idx[j]].Unlock()
		}
	}
}

// cached returns the usable state of p built for cand, or nil.
func (f *FS) cached(p string, cand []int) *dirState {
	if !f.cacheOn() {
		return nil
	}
	f.stateMu.Lock()
	s := f.states[p]
	if s != nil {
		f.lru.MoveToFront(s.elem)
	}
	f.stateMu.Unlock()
	if s == nil || !slices.Equal(s.cand, cand) || !s.usable(f.clock()) {
		return nil
	}
	return s
}

// dir returns the directory p whose parent found it in the branches cand,
// building its state if needed. The caller must not hold p's lock.
func (f *FS) dir(p string, cand []int) (dirRef, error) {
	if s := f.cached(p, cand); s != nil {
		return s.ref(), nil
	}
	if !f.cacheOn() {
		return f.dirLocked(p, cand) // nothing to build: no lock
	}
	mu := f.dirLock(p)
	mu.Lock()
	defer mu.Unlock()
	return f.dirLocked(p, cand)
}

// dirLocked is dir for a caller that holds p's lock.
func (f *FS) dirLocked(p string, cand []int) (dirRef, error) {
	if s := f.cached(p, cand); s != nil {
		return s.ref(), nil
	}
	if !f.cacheOn() {
		layers, err := f.cutOpaque(p, cand)
		return dirRef{path: p, cand: cand, layers: layers}, err
	}
	f.stateMu.Lock()
	epoch := f.epoch
	f.stateMu.Unlock()
	s, err := f.build(p, cand)
	if err != nil {
		return dirRef{}, err
	}
	f.install(s, epoch)
	return s.ref(), nil
}

// ref is the directory s describes; one too big to keep names has none.
func (s *dirState) ref() dirRef {
	r := dirRef{path: s.path, cand: s.cand, layers: s.layers, st: s}
	if s.big {
		r.st = nil
	}
	return r
}

// cutOpaque returns cand cut after the first branch whose copy of p holds an
// opaque marker (probing: the path without state).
func (f *FS) cutOpaque(p string, cand []int) ([]int, error) {
	if p == "." {
		return cand, nil
	}
	for i, li := range cand {
		opq, err := f.has(li, libservices.Join(p, opaqueTag))
		if err != nil {
			return nil, err
		}
		if opq {
			return cand[:i+1], nil
		}
	}
	return cand, nil
}

// build lists p in each branch of cand and merges what they hold.
func (f *FS) build(p string, cand []int) (*dirState, error) {
	s := &dirState{path: p, cand: cand, expires: f.clock() + int64(f.timeout)}
	type rec struct {
		nameEnt
		closed  bool // hidden below: a whiteout or a non-directory above
		lowDone bool // a branch below the upper one decided lower
	}
	m := map[string]*rec{}
	get := func(n string) *rec {
		r := m[n]
		if r == nil {
			r = &rec{nameEnt: absent()}
			m[n] = r
		}
		return r
	}
	s.layers = cand
	for i, li := range cand {
		ents, err := f.layers[li].ReadDir(p)
		if err != nil {
			if err == syscall.ENOENT || err == syscall.ENOTDIR {
				continue // gone from this branch since the parent looked
			}
			return nil, err
		}
		if len(m)+len(ents) > f.maxDirNames {
			// Too big to keep: remember only that, and probe its names.
			layers, err := f.cutOpaque(p, cand)
			if err != nil {
				return nil, err
			}
			return &dirState{path: p, cand: cand, layers: layers, big: true, expires: s.expires, size: 1}, nil
		}
		opaque := false
		var whiteouts []string
		for _, e := range ents {
			if reserved(e.Name) {
				switch {
				case e.Name == opaqueTag:
					opaque = p != "."
				case strings.HasPrefix(e.Name, tmpPrefix):
				default:
					whiteouts = append(whiteouts, e.Name[len(whPrefix):])
				}
				continue
			}
			typ := e.Type & syscall.S_IFMT
			if typ == 0 { // the branch does not know the type from the listing
				var a libservices.Attr
				if err := f.layers[li].Lstat(libservices.Join(p, e.Name), &a); err != nil {
					continue
				}
				typ = a.Mode & syscall.S_IFMT
			}
			r := get(e.Name)
			if li != 0 && !r.lowDone {
				r.lower, r.lowDone = true, true
			}
			if r.closed {
				continue
			}
			switch {
			case !r.exists():
				r.layer, r.typ = li, typ
				if typ == syscall.S_IFDIR {
					r.dirs = []int{li}
				} else {
					r.closed = true
				}
			case typ == syscall.S_IFDIR:
				r.dirs = append(r.dirs, li)
			default:
				r.closed = true
			}
		}
		for _, w := range whiteouts {
			r := get(w)
			if li == 0 {
				r.upperWh = true
			} else if !r.lowDone {
				r.lowDone = true
			}
			r.closed = true
		}
		if opaque {
			s.layers = cand[:i+1]
			break
		}
	}
	s.names = make(map[string]nameEnt, len(m))
	for n, r := range m {
		if r.exists() || r.upperWh || r.lower {
			s.names[n] = r.nameEnt
		}
	}
	s.size = len(s.names) + 1
	return s, nil
}

// install keeps s unless a directory changed shape since epoch (a listing that
// raced with a rename or removal must not be kept), evicting the least
// recently used states beyond the bounds.
func (f *FS) install(s *dirState, epoch uint64) {
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	if f.epoch != epoch {
		return
	}
	if old := f.states[s.path]; old != nil {
		f.dropStateLocked(old)
	}
	f.states[s.path] = s
	s.elem = f.lru.PushFront(s)
	f.names += s.size
	for f.lru.Len() > f.maxDirs || f.names > f.maxNames {
		f.dropStateLocked(f.lru.Back().Value.(*dirState))
	}
}

func (f *FS) dropStateLocked(s *dirState) {
	f.lru.Remove(s.elem)
	delete(f.states, s.path)
	f.names -= s.size
	f.evictions++
	s.mu.Lock()
	s.dead = true
	s.seq++
	s.mu.Unlock()
}

// forget drops the state of p and of every directory below it, after p was
// removed, renamed, replaced or copied up: their branches changed.
func (f *FS) forget(p string) {
	if !f.cacheOn() {
		return
	}
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	f.epoch++
	if s := f.states[p]; s != nil {
		f.dropStateLocked(s)
	}
	for q, s := range f.states {
		if libservices.HasPrefixDir(q, p) {
			f.dropStateLocked(s)
		}
	}
}

// stale handles a branch that disagreed with the state of r (a name the state
// shows is gone, or has another type). If no change of this union explains it
// (none was in flight: the lock is free, and the state did not move since seq),
// something else changed the branch: the state is dropped so that the next
// lookup lists the directory again.
func (f *FS) stale(r dirRef, seq uint64) {
	if r.st == nil {
		return
	}
	mu := f.dirLock(r.path)
	mu.Lock()
	defer mu.Unlock()
	f.staleLocked(r, seq)
}

func (f *FS) staleLocked(r dirRef, seq uint64) {
	if r.st == nil {
		return
	}
	r.st.mu.Lock()
	if r.st.seq == seq {
		r.st.dead = true
		r.st.seq++
	}
	r.st.mu.Unlock()
}

// probe finds base in d by asking the branches, the path for directories
// without state. full also finds the whiteout facts that changes need
// (upperWh, lower); without it they are not reliable.
func (f *FS) probe(d dirRef, base string, full bool) (nameEnt, error) {
	e := absent()
	p := libservices.Join(d.path, base)
	closed, lowDone := false, false
	for _, li := range d.layers {
		var a libservices.Attr
		err := f.layers[li].Lstat(p, &a)
		if err != nil && err != syscall.ENOENT && err != syscall.ENOTDIR {
			return e, err
		}
		if err == nil {
			if li != 0 && !lowDone {
				e.lower, lowDone = true, true
			}
			if !closed {
				typ := a.Mode & syscall.S_IFMT
				switch {
				case !e.exists():
					e.layer, e.typ = li, typ
					if typ == syscall.S_IFDIR {
						e.dirs = []int{li}
					} else {
						closed = true
					}
				case typ == syscall.S_IFDIR:
					e.dirs = append(e.dirs, li)
				default:
					closed = true
				}
			}
		} else if !closed || full && (li == 0 || !lowDone) {
			wh, err := f.has(li, libservices.Join(d.path, whPrefix+base))
			if err != nil {
				return e, err
			}
			if wh {
				if li == 0 {
					e.upperWh = true
				} else {
					lowDone = true
				}
				closed = true
			}
		}
		if closed && (!full || lowDone) {
			break
		}
	}
	return e, nil
}

// child finds base in d: from d's state, or by probing.
func (f *FS) child(d dirRef, base string, full bool) (nameEnt, uint64, error) {
	if reserved(base) {
		return absent(), 0, nil
	}
	if d.st != nil {
		e, seq := d.st.get(base)
		return e, seq, nil
	}
	e, err := f.probe(d, base, full)
	return e, 0, err
}

// clock is monotonic nanoseconds; tests replace it.
func monotonic() func() int64 {
	start := time.Now()
	return func() int64 { return int64(time.Since(start)) }
}

// forgetOne drops the state of p alone: a directory created or copied up
// there, whose descendants cannot have state that a lookup reaches.
func (f *FS) forgetOne(p string) {
	if !f.cacheOn() {
		return
	}
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	f.epoch++
	if s := f.states[p]; s != nil {
		f.dropStateLocked(s)
	}
}
