package service

import (
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/access"
)

// instance is one filesystem the service hosts.
type instance struct {
	name   string
	prefix string // clean, absolute, no trailing slash except "/" itself
	fs     libservices.FS
	acc    *access.Checker // fs as each caller may use it: every request goes through it
	idx    int             // in mountTable.all: the index of its clients' Views
	fuse   []string        // FUSE mountpoints

	locks lockTable
	open  atomic.Int64 // objects clients hold on this instance
}

// mountTable maps service paths to instances by longest prefix. It is built once at
// start and read-only afterwards, so lookups take no lock.
type mountTable struct {
	byLen []*instance // longest prefix first
	all   []*instance // as configured; instance.idx indexes it
}

// cleanPrefix checks a configured mount prefix: absolute, no "." or ".."
// components, no empty components.
func cleanPrefix(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("mount prefix %q must be absolute", p)
	}
	if p == "/" {
		return p, nil
	}
	p = strings.TrimSuffix(p, "/")
	for _, c := range strings.Split(p[1:], "/") {
		if c == "" || c == "." || c == ".." {
			return "", fmt.Errorf("mount prefix %q has an empty, . or .. component", p)
		}
	}
	return p, nil
}

// accessUnchecked, when set, names the instances whose Checker checks
// nothing: the baseline of the checks' benchmarks (export_test.go), never set
// otherwise.
var accessUnchecked func(name string) bool

// newMountTable also gives every instance its access.Checker (see
// libservices/access), which its FUSE mounts share (fusegw.Options.Access).
func newMountTable(insts []*instance) (*mountTable, error) {
	seen := map[string]string{}
	for i, in := range insts {
		in.idx = i
		if in.acc == nil {
			in.acc = access.New(in.fs, access.Options{Unchecked: accessUnchecked != nil && accessUnchecked(in.name)})
		}
		if other, dup := seen[in.prefix]; dup {
			return nil, fmt.Errorf("filesystems %q and %q are both mounted at %s", other, in.name, in.prefix)
		}
		seen[in.prefix] = in.name
	}
	t := &mountTable{byLen: append([]*instance(nil), insts...), all: insts}
	sort.SliceStable(t.byLen, func(i, j int) bool { return len(t.byLen[i].prefix) > len(t.byLen[j].prefix) })
	return t, nil
}

// resolve finds the instance that holds the service path p and returns p relative to
// that instance's root. A path need not start with "/" (it is relative to the
// service root either way). Paths outside every mount are ENOENT.
func (t *mountTable) resolve(p string) (*instance, string, syscall.Errno) {
	if len(p) == 0 {
		return nil, "", syscall.ENOENT
	}
	// Collapse leading slashes once; the instance's own Clean does the rest.
	for {
		if len(p) > 0 && p[0] == '/' {
			p = p[1:]
		} else if len(p) > 1 && p[0] == '.' && p[1] == '/' {
			p = p[2:]
		} else {
			break
		}
	}
	if p == "." {
		p = ""
	}
	for _, in := range t.byLen {
		if in.prefix == "/" {
			if p == "" {
				return in, ".", 0
			}
			return in, p, 0
		}
		pre := in.prefix[1:]
		if !strings.HasPrefix(p, pre) {
			continue
		}
		rest := p[len(pre):]
		switch {
		case rest == "":
			return in, ".", 0
		case rest[0] == '/':
			rest = strings.TrimLeft(rest, "/")
			if rest == "" {
				return in, ".", 0
			}
			return in, rest, 0
		}
	}
	return nil, "", syscall.ENOENT
}

// lookup returns the instance called name.
func (t *mountTable) lookup(name string) *instance {
	for _, in := range t.byLen {
		if in.name == name {
			return in
		}
	}
	return nil
}
