package access_test

import (
	"fmt"
	"testing"

	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/access"
)

// BenchmarkChecker: a stat of d1/d2/f and a 4 KiB read through a Checker on a
// cache over memfs, as Bob and as root, against the same calls on the stack
// (checks=false: a Checker built Unchecked):
//
//	go test -run '^$' -bench Checker -count 10 ./libservices/access
func BenchmarkChecker(b *testing.B) {
	for _, op := range []string{"Stat", "Read4K"} {
		for _, who := range []struct {
			name string
			cr   *access.Cred
		}{{"user", &bob}, {"root", &root}} {
			for _, checks := range []bool{true, false} {
				b.Run(fmt.Sprintf("%s/%s/checks=%v", op, who.name, checks), func(b *testing.B) {
					fs := build(b, "stack:\n  - cache: {size: 1MiB}\n  - memfs: {}\n")
					for _, d := range []string{"d1", "d1/d2"} {
						if err := fs.Mkdir(d, 0o755); err != nil {
							b.Fatal(err)
						}
					}
					h, err := fs.Open("d1/d2/f", libservices.O_CREAT|libservices.O_RDWR, 0o644)
					if err != nil {
						b.Fatal(err)
					}
					buf := make([]byte, 4096)
					if _, err := fs.WriteAt(h, buf, 0); err != nil {
						b.Fatal(err)
					}
					fs.Close(h)
					v := access.New(fs, access.Options{Unchecked: !checks}).As(who.cr)
					b.ReportAllocs()
					if op == "Stat" {
						var a libservices.Attr
						for b.Loop() {
							if err := v.Stat("d1/d2/f", &a); err != nil {
								b.Fatal(err)
							}
						}
						return
					}
					h, err = v.Open("d1/d2/f", libservices.O_RDONLY, 0)
					if err != nil {
						b.Fatal(err)
					}
					defer v.Close(h)
					b.SetBytes(4096)
					for b.Loop() {
						if _, err := v.ReadAt(h, buf, 0); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
