package service_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/polytropon/polytropon/internal/peercred"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/libservices"
	"github.com/polytropon/polytropon/libservices/fstest"
	"github.com/polytropon/polytropon/service"
)

// accessBenchService has two instances of the default stack (cache over union
// over passthrough), /c with the permission checks and /u without, served by
// one spinning worker and open to fstest.Bob; each holds d1/d2/f (4 KiB,
// cached) readable by everyone.
func accessBenchService(b *testing.B) *service.Service {
	defer service.SetAccessUnchecked("u")()
	dir := openDir(b)
	y := "socket: " + dir + "/s.sock\nspin: 2000\nfilesystems:\n"
	for _, name := range []string{"c", "u"} {
		up, low := dir+"/"+name+"-upper", dir+"/"+name+"-lower"
		for _, d := range []string{up, low} {
			if err := os.Mkdir(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		y += "  - name: " + name + "\n    stack: [{cache: {size: 4MiB, policy: writeback}}, {union: {}}]\n" +
			"    branches: [{passthrough: {dir: " + up + "}}, {passthrough: {dir: " + low + "}}]\n"
	}
	cfg, err := service.ParseConfig([]byte(y))
	if err != nil {
		b.Fatal(err)
	}
	cfg.AllowUIDs = fstest.PermUIDs()
	s := start(b, *cfg)
	if err := os.Chmod(s.Socket(), 0o777); err != nil {
		b.Fatal(err)
	}
	root := dialFS(b, s, "")
	for _, name := range []string{"/c", "/u"} {
		for _, d := range []string{"/d1", "/d1/d2", "/d1/d2/w"} {
			if err := root.Mkdir(name+d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		// Where every caller may create (CreateUnlink): mkdir's mode is
		// exact, no umask; set it again in case the FS applied one.
		if err := root.Setattr(name+"/d1/d2/w", &libservices.SetAttr{Valid: libservices.SetMode, Mode: 0o777}); err != nil {
			b.Fatal(err)
		}
		h, err := root.Open(name+"/d1/d2/f", libservices.O_CREAT|libservices.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := root.WriteAt(h, make([]byte, 4096), 0); err != nil {
			b.Fatal(err)
		}
		if err := root.Close(h); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// pairedP50 alternates calls of on (checks on) and off (checks off), timing
// each, so that both see the same machine at the same moments (other load,
// frequency, the workers' spinning), and reports each median and the
// difference of on's to off's in percent.
func pairedP50(b *testing.B, on, off func() error) {
	const keep = 1 << 18
	latOn := make([]time.Duration, 0, keep)
	latOff := make([]time.Duration, 0, keep)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Which goes first alternates too.
		first, second, l1, l2 := on, off, &latOn, &latOff
		if i&1 == 1 {
			first, second, l1, l2 = off, on, &latOff, &latOn
		}
		t0 := time.Now()
		if err := first(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := second(); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if len(*l1) < keep {
			*l1 = append(*l1, t1.Sub(t0))
			*l2 = append(*l2, t2.Sub(t1))
		}
	}
	b.StopTimer()
	if len(latOn) == 0 {
		return
	}
	slices.Sort(latOn)
	slices.Sort(latOff)
	pOn, pOff := latOn[len(latOn)/2], latOff[len(latOff)/2]
	b.ReportMetric(float64(pOn.Nanoseconds()), "p50-checks-ns")
	b.ReportMetric(float64(pOff.Nanoseconds()), "p50-nochecks-ns")
	b.ReportMetric(100*(float64(pOn)/float64(pOff)-1), "overhead-%")
}

// BenchmarkAccess measures what the permission checks cost the direct path: a
// cached stat of d1/d2/f and a cached 4 KiB read through an open handle, as an
// unprivileged caller (Bob, whose search permission is checked on every
// directory) and as root. One service holds two instances, one with the checks
// and one without, and one client alternates calls between them on the same
// connection and worker (see pairedP50); ns/op is the pair's. Repeat it for the
// spread:
//
//	go test -run '^$' -bench Access -count 10 ./service
func BenchmarkAccess(b *testing.B) {
	testenv.Root(b)
	for _, op := range []string{"Stat", "Read4K", "CreateUnlink"} {
		for _, who := range []struct {
			name string
			c    peercred.Cred
		}{{"user", fstest.Bob}, {"root", fstest.Root}} {
			b.Run(op+"/"+who.name, func(b *testing.B) {
				fs := dialAs(b, accessBenchService(b), who.c, "")
				var calls [2]func() error
				for i, inst := range []string{"/c", "/u"} {
					name := inst + "/d1/d2/f"
					if op == "CreateUnlink" {
						name := inst + "/d1/d2/w/" + who.name
						calls[i] = func() error {
							h, err := fs.Open(name, libservices.O_CREAT|libservices.O_EXCL|libservices.O_RDWR, 0o644)
							if err != nil {
								return err
							}
							if err := fs.Close(h); err != nil {
								return err
							}
							return fs.Unlink(name)
						}
						continue
					}
					if op == "Stat" {
						a := new(libservices.Attr)
						calls[i] = func() error { return fs.Stat(name, a) }
						continue
					}
					h, err := fs.Open(name, libservices.O_RDONLY, 0)
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { fs.Close(h) })
					buf := make([]byte, 4096)
					calls[i] = func() error {
						_, err := fs.ReadAt(h, buf, 0)
						return err
					}
				}
				pairedP50(b, calls[0], calls[1])
			})
		}
	}
}
