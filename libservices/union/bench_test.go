package union

import (
	"os"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/passthrough"
)

// benchUnion is a union over two passthrough branches in /var/tmp (a disk
// FS, as a tenant's would be): d/up is a file in the upper, d/low one in the
// lower, d is merged; e exists only in the upper.
func benchUnion(b *testing.B) libservices.FS {
	b.Helper()
	var layers []libservices.FS
	for i, ro := range []bool{false, true} {
		dir, err := os.MkdirTemp("/var/tmp", "polytropon-union-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Mkdir(dir+"/d", 0o755); err != nil {
			b.Fatal(err)
		}
		name := map[int]string{0: "/d/up", 1: "/d/low"}[i]
		if err := os.WriteFile(dir+name, []byte("x"), 0o644); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			if err := os.Mkdir(dir+"/e", 0o755); err != nil {
				b.Fatal(err)
			}
		}
		p, err := passthrough.New(passthrough.Options{Dir: dir, ReadOnly: ro})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.CloseFS() })
		layers = append(layers, p)
	}
	return New(layers[0], layers[1])
}

func BenchmarkLstatKnown(b *testing.B) {
	f := benchUnion(b)
	var a libservices.Attr
	for b.Loop() {
		if err := f.Lstat("d/up", &a); err != nil {
			b.Fatal(err)
		}
	}
}

func benchOpenClose(b *testing.B, p string) {
	f := benchUnion(b)
	for b.Loop() {
		h, err := f.Open(p, libservices.O_RDONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Close(h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenCloseUpper(b *testing.B) { benchOpenClose(b, "d/up") }
func BenchmarkOpenCloseLower(b *testing.B) { benchOpenClose(b, "d/low") }

func BenchmarkCreateUnlink(b *testing.B) {
	f := benchUnion(b)
	for b.Loop() {
		h, err := f.Open("e/new", libservices.O_CREAT|libservices.O_EXCL|libservices.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Close(h); err != nil {
			b.Fatal(err)
		}
		if err := f.Unlink("e/new"); err != nil {
			b.Fatal(err)
		}
	}
}
