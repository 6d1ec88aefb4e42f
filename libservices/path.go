package libservices

import (
	"errors"
	"strings"
	"syscall"
)

// Clean validates name and returns it in canonical form: components separated by
// single slashes, no leading or trailing slash, no "." components; the root is ".".
// It returns name itself, without allocating, when name is already canonical.
//
// Errors, in the order checked: "" is ENOENT; a NUL byte is EINVAL; a path of
// PathMax bytes or more is ENAMETOOLONG; a ".." component is EINVAL; a component
// longer than NameMax is ENAMETOOLONG.
func Clean(name string) (string, error) {
	if name == "" {
		return "", syscall.ENOENT
	}
	if len(name) >= PathMax {
		return "", syscall.ENAMETOOLONG
	}
	canonical := true
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) {
			c := name[i]
			if c == 0 {
				return "", syscall.EINVAL
			}
			if c != '/' {
				continue
			}
		}
		comp := name[start:i]
		switch {
		case comp == "":
			// Leading, trailing or doubled slash. A lone "." is canonical.
			canonical = false
		case comp == ".":
			if len(name) != 1 {
				canonical = false
			}
		case comp == "..":
			return "", syscall.EINVAL
		case len(comp) > NameMax:
			return "", syscall.ENAMETOOLONG
		}
		start = i + 1
	}
	if canonical {
		return name, nil
	}
	var b strings.Builder
	for _, comp := range strings.Split(name, "/") {
		if comp == "" || comp == "." {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('/')
		}
		b.WriteString(comp)
	}
	if b.Len() == 0 {
		return ".", nil
	}
	return b.String(), nil
}

// Split returns the parent directory and final component of a clean path; the
// parent of a top-level name is ".". Split(".") is (".", ".").
func Split(clean string) (dir, base string) {
	i := strings.LastIndexByte(clean, '/')
	if i < 0 {
		return ".", clean
	}
	return clean[:i], clean[i+1:]
}

// Join joins a clean directory path and a component.
func Join(dir, base string) string {
	if dir == "." {
		return base
	}
	return dir + "/" + base
}

// IsRoot reports whether clean names the root.
func IsRoot(clean string) bool { return clean == "." }

// HasPrefixDir reports whether clean path p is dir or lies below it.
func HasPrefixDir(p, dir string) bool {
	if dir == "." {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir) && len(p) > len(dir) && p[len(dir)] == '/'
}

// Errno converts err to the syscall.Errno the contract requires: nil stays nil, an
// Errno (possibly wrapped) is unwrapped, anything else becomes EIO.
func Errno(err error) error {
	if err == nil {
		return nil
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if e == 0 {
			return nil
		}
		return e
	}
	return syscall.EIO
}
