package service_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/fslib"
	"github.com/polytropon/polytropon/internal/testenv"
	"github.com/polytropon/polytropon/service"
)

// openerEnv turns the test binary into a client driven by commands on stdin
// (the quota test runs several as other uids): "client" dials another client,
// "open DIR" opens new files in DIR on the latest client until the service
// refuses, "quit" ends. Each command answers one line.
const openerEnv = "POLYTROPON_SERVICE_TEST_OPENER"

func init() {
	sock := os.Getenv(openerEnv)
	if sock == "" {
		return
	}
	var clients []*fslib.Client
	var files []*fslib.File
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "client":
			c, err := fslib.Dial(fslib.DialOptions{Socket: sock})
			if err == nil {
				clients = append(clients, c)
			}
			fmt.Println("dial", errnoName(err))
		case len(f) == 2 && f[0] == "open" && len(clients) > 0:
			c := clients[len(clients)-1]
			n := 0
			var err error
			for ; n < 10000; n++ {
				var fl *fslib.File
				if fl, err = c.OpenFile(fmt.Sprintf("%s/f%d-%d", f[1], len(clients), n), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
					break
				}
				files = append(files, fl)
			}
			fmt.Println("opened", n, errnoName(err))
		case len(f) == 1 && f[0] == "quit":
			for _, c := range clients {
				c.Close()
			}
			os.Exit(0)
		default:
			fmt.Println("bad command", sc.Text())
		}
	}
	os.Exit(0)
}

func errnoName(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return unix.ErrnoName(e)
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

// opener is a running opener process.
type opener struct {
	cmd   *exec.Cmd
	in    *os.File
	lines *bufio.Scanner
}

func (o *opener) do(t *testing.T, cmd, want string) {
	t.Helper()
	fmt.Fprintln(o.in, cmd)
	done := make(chan string, 1)
	go func() {
		if o.lines.Scan() {
			done <- o.lines.Text()
		}
		close(done)
	}()
	select {
	case got := <-done:
		if got != want {
			t.Fatalf("%q: client said %q, want %q", cmd, got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%q: no answer", cmd)
	}
}

// TestQuotaOnlyOverQuotaUID: a uid that fills its handle share gets EMFILE, and
// one that fills its client slots gets EAGAIN, while another uid (and root)
// still opens and connects; what a uid held is returned when its clients go.
func TestQuotaOnlyOverQuotaUID(t *testing.T) {
	testenv.Root(t)
	const uidA, uidB = 54331, 54332
	dir, err := os.MkdirTemp("", "polytropon-quota-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	for _, d := range []string{dir, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []int{uidA, uidB} {
		d := filepath.Join(data, fmt.Sprint(u))
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, u, u); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "opener")
	src, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := service.ParseConfig([]byte(fmt.Sprintf(`
socket: %s/s.sock
allow_uids: [%d, %d]
max_handles_per_uid: 10
max_handles_per_client: 6
max_clients_per_uid: 2
filesystems:
  - name: d
    stack:
      - passthrough: {dir: %s}
`, dir, uidA, uidB, data)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := service.Start(*cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := os.Chmod(s.Socket(), 0o777); err != nil {
		t.Fatal(err)
	}
	start := func(uid uint32) *opener {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), openerEnv+"="+s.Socket())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return &opener{cmd: cmd, in: in.(*os.File), lines: bufio.NewScanner(out)}
	}
	a, b := start(uidA), start(uidB)
	dirA, dirB := fmt.Sprintf("/d/%d", uidA), fmt.Sprintf("/d/%d", uidB)
	a.do(t, "client", "dial ok")
	a.do(t, "open "+dirA, "opened 6 EMFILE") // the client's own table
	b.do(t, "client", "dial ok")
	a.do(t, "client", "dial ok")
	a.do(t, "open "+dirA, "opened 4 EMFILE") // the uid's share (10)
	a.do(t, "client", "dial EAGAIN")         // the uid's slots (2)
	// The other uid and root are not affected.
	b.do(t, "open "+dirB, "opened 6 EMFILE")
	c, err := fslib.Dial(fslib.DialOptions{Socket: s.Socket()})
	if err != nil {
		t.Fatalf("root beside a uid over its quotas: %v", err)
	}
	defer c.Close()
	f, err := c.Create("/d/root-file")
	if err != nil {
		t.Fatalf("root opening beside a uid over its quotas: %v", err)
	}
	f.Close()
	if held := s.Quota().Held(uidA); held != 10 {
		t.Fatalf("uid %d holds %d handles, want 10", uidA, held)
	}
	a.do(t, "quit", "")
	for deadline := time.Now().Add(20 * time.Second); s.Quota().Held(uidA) != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("uid %d still holds %d handles after its clients left", uidA, s.Quota().Held(uidA))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
