//go:build ceph

package cephfs

import (
	"strings"
	"syscall"

	"github.com/polytropon/polytropon/libservices"
)

// resolve turns a contract path into a path inside the mount that contains no
// symbolic link (but the final component when follow is false), resolving links
// itself: libcephfs follows at most 8 links, answers EACCES instead of ENOTDIR
// for a path through a file, and lets ".." climb above the mount's root. Here
// ".." is clamped at the root, an absolute target starts again at the root and
// up to libservices.MaxSymlinks links are followed, as the contract says.
//
// With follow, a receives the attributes of the final file and exists says
// whether it exists (a missing final component is not an error: callers create
// it). Without follow the final component is not looked at; exists is false.
//
// Each intermediate component costs one lstat, which the client answers from
// its cache while it holds the capabilities. A concurrent rename of a directory
// into a symlink between resolve and the operation is not detected (the tenant
// owns the whole FS, so it can only confuse itself).
func (f *FS) resolve(name string, follow bool, a *libservices.Attr) (p string, exists bool, err error) {
	return f.resolveAttr(name, follow, a, false)
}

// resolveAttr is resolve; with full, a gets every attribute of the final file
// (Stat), not only its type.
func (f *FS) resolveAttr(name string, follow bool, a *libservices.Attr, full bool) (p string, exists bool, err error) {
	clean, err := libservices.Clean(name)
	if err != nil {
		return "", false, err
	}
	if clean == "." {
		if follow {
			if err := statxMask(f.m, "/", false, a, statxMaskFor(full)); err != nil {
				return "", false, err
			}
			return "/", true, nil
		}
		return "/", false, nil
	}
	if !follow && !strings.Contains(clean, "/") {
		return "/" + clean, false, nil // the common case: a name in the root
	}
	done := make([]string, 0, 8)
	todo := strings.Split(clean, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		last := len(todo) == 0
		cur := join(done, c)
		if last && !follow {
			return cur, false, nil
		}
		var err error
		if last && full {
			err = statx(f.m, cur, true, a)
		} else {
			err = statType(f.m, cur, a)
		}
		if err != nil {
			if err == syscall.ENOENT && last {
				return cur, false, nil
			}
			return "", false, err
		}
		if a.IsSymlink() {
			links++
			if links > libservices.MaxSymlinks {
				return "", false, syscall.ELOOP
			}
			target, err := f.m.Readlink(cur)
			if err != nil {
				return "", false, errno(err)
			}
			if strings.HasPrefix(target, "/") {
				done = done[:0]
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		if !last && !a.IsDir() {
			return "", false, syscall.ENOTDIR
		}
		done = append(done, c)
	}
	// The path ended on ".." or a link to a directory: the final file is a
	// directory already looked at, or the root.
	p = join(done, "")
	if err := statxMask(f.m, p, false, a, statxMaskFor(full)); err != nil {
		return "", false, err
	}
	return p, true, nil
}

func join(done []string, c string) string {
	var b strings.Builder
	for _, d := range done {
		b.WriteByte('/')
		b.WriteString(d)
	}
	if c != "" {
		b.WriteByte('/')
		b.WriteString(c)
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}
