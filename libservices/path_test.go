package libservices

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestClean(t *testing.T) {
	long := strings.Repeat("x", NameMax)
	for _, c := range []struct {
		in   string
		want string
		err  error
	}{
		{"", "", syscall.ENOENT},
		{".", ".", nil},
		{"/", ".", nil},
		{"//./", ".", nil},
		{"a", "a", nil},
		{"a/b", "a/b", nil},
		{"/a/b", "a/b", nil},
		{"a//b/", "a/b", nil},
		{"./a/./b/.", "a/b", nil},
		{"..", "", syscall.EINVAL},
		{"a/..", "", syscall.EINVAL},
		{"a/../b", "", syscall.EINVAL},
		{"a\x00b", "", syscall.EINVAL},
		{"...", "...", nil},
		{"..a", "..a", nil},
		{long, long, nil},
		{long + "y", "", syscall.ENAMETOOLONG},
		{"a/" + long + "y/b", "", syscall.ENAMETOOLONG},
		{strings.Repeat("a/", PathMax/2), "", syscall.ENAMETOOLONG},
	} {
		got, err := Clean(c.in)
		if got != c.want || err != c.err {
			t.Errorf("Clean(%q) = %q, %v; want %q, %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestCleanNoAlloc(t *testing.T) {
	var sink string
	if n := testing.AllocsPerRun(100, func() { sink, _ = Clean("dir/sub/file.txt") }); n != 0 {
		t.Fatalf("Clean of a canonical path allocates %v times", n)
	}
	_ = sink
}

func TestSplitJoin(t *testing.T) {
	for _, c := range []struct{ p, dir, base string }{{"a", ".", "a"}, {"a/b", "a", "b"}, {"a/b/c", "a/b", "c"}} {
		d, b := Split(c.p)
		if d != c.dir || b != c.base || Join(d, b) != c.p {
			t.Errorf("Split(%q) = %q %q", c.p, d, b)
		}
	}
	if !HasPrefixDir("a/b", "a") || HasPrefixDir("ab", "a") || !HasPrefixDir("x", ".") || !HasPrefixDir("a", "a") {
		t.Error("HasPrefixDir")
	}
}

func TestByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"256MiB", 256 << 20, true}, {"2GiB", 2 << 30, true}, {"400MB", 400e6, true}, {"4096", 4096, true},
		{"1K", 1024, true}, {"3 TiB", 3 << 40, true}, {"12XB", 0, false}, {"", 0, false}, {"MiB", 0, false},
		{"-1", 0, false}, {"1.5GiB", 0, false}, {"99999999999999999999", 0, false}, {"9000000TiB", 0, false},
	} {
		got, err := ParseByteSize(c.in)
		if c.ok != (err == nil) || got != c.want {
			t.Errorf("ParseByteSize(%q) = %d, %v", c.in, got, err)
		}
		if err != nil && !strings.Contains(err.Error(), "bad size") {
			t.Errorf("error %q does not say bad size", err)
		}
	}
}

func TestErrno(t *testing.T) {
	if Errno(nil) != nil || Errno(syscall.Errno(0)) != nil || Errno(syscall.ENOENT) != syscall.ENOENT {
		t.Error("Errno passthrough")
	}
	if Errno(errString("x")) != syscall.EIO {
		t.Error("non-errno is not EIO")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// FuzzClean: any input gets a canonical path or an errno, never a panic, and a
// canonical path is a fixed point with no "..", no empty component and no NUL.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"", ".", "/", "a//b/", "../x", "a/./b", "x\x00", strings.Repeat("y", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Clean(s)
		if err != nil {
			if _, ok := err.(syscall.Errno); !ok {
				t.Fatalf("Clean(%q): error %T", s, err)
			}
			return
		}
		if again, err := Clean(c); err != nil || again != c {
			t.Fatalf("Clean(%q) = %q, not a fixed point (%q, %v)", s, c, again, err)
		}
		if c != "." {
			for _, comp := range strings.Split(c, "/") {
				if comp == "" || comp == "." || comp == ".." || len(comp) > NameMax || strings.IndexByte(comp, 0) >= 0 {
					t.Fatalf("Clean(%q) = %q has component %q", s, c, comp)
				}
			}
		}
	})
}

// TestDurationYAML: a layer's timeout is a duration string or the integer 0
// ("no caching"); another bare number is refused with the line it is on.
func TestDurationYAML(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"d: 1s", time.Second, ""},
		{"d: 250ms", 250 * time.Millisecond, ""},
		{"d: 0", 0, ""},
		{"d: 0s", 0, ""},
		{"d: 5", 0, `line 1: "5" is not a duration (want e.g. 1s, 250ms, or 0)`},
		{"d: soon", 0, `line 1: "soon" is not a duration`},
		{"d: [1s]", 0, "is not a duration"},
	} {
		var v struct {
			D *Duration `yaml:"d"`
		}
		err := yaml.Unmarshal([]byte(tc.in), &v)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error with %q", tc.in, err, tc.err)
			}
		case err != nil || v.D == nil || time.Duration(*v.D) != tc.want:
			t.Errorf("%q: %v, %v; want %v", tc.in, v.D, err, tc.want)
		}
	}
}
