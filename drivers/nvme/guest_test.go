package nvme

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/polytropon/polytropon/blockdev"
	"github.com/polytropon/polytropon/blockdev/alignedbuf"
	"github.com/polytropon/polytropon/blockdev/blockdevtest"
)

// GuestEnv is set by the init of `make nvme-test`'s QEMU guest. The guest tests need
// an NVMe controller they may overwrite, unbind and reset, which no developer's or
// CI host offers; outside the guest they skip, and scripts/nvme/test.sh fails when
// the guest did not run them.
const GuestEnv = "POLYTROPON_NVME_GUEST"

func inGuest(t *testing.T) {
	t.Helper()
	if os.Getenv(GuestEnv) != "1" {
		t.Skip("runs inside the QEMU guest of `make nvme-test` (" + GuestEnv + "=1)")
	}
}

// guestController finds the one emulated controller.
func guestController(t *testing.T) Controller {
	t.Helper()
	cs, err := Sysfs{}.List()
	if err != nil || len(cs) != 1 {
		t.Fatalf("want one NVMe controller in the guest: %v, %+v", err, cs)
	}
	return cs[0]
}

func genericPath(t *testing.T, c Controller) string {
	t.Helper()
	if len(c.Namespaces) == 0 {
		t.Fatalf("controller %s has no namespace (driver %q)", c.Address, c.Driver)
	}
	// nvme0n1 -> ng0n1
	return "/dev/ng" + strings.TrimPrefix(c.Namespaces[0], "nvme")
}

// kmsg writes a marker into the kernel log, which the guest's init uses to tell the
// DMA fault a test provokes from any other.
func kmsg(t *testing.T, s string) {
	t.Helper()
	if err := os.WriteFile("/dev/kmsg", []byte("polytropon-nvme: "+s+"\n"), 0); err != nil {
		t.Fatalf("write /dev/kmsg: %v", err)
	}
}

func kernelLog(t *testing.T) string {
	t.Helper()
	n, err := unix.Klogctl(10, nil) // SYSLOG_ACTION_SIZE_BUFFER
	if err != nil {
		t.Fatalf("klogctl: %v", err)
	}
	b := make([]byte, n)
	m, err := unix.Klogctl(3, b) // SYSLOG_ACTION_READ_ALL
	if err != nil {
		t.Fatalf("klogctl: %v", err)
	}
	return string(b[:m])
}

// integrity writes random extents (random offsets, 1 block up to the maximum
// transfer, so multi-page PRP lists) at queue depth 32, reads them back through the
// queue and through ReadAt, and compares.
func integrity(t *testing.T, d blockdev.Device, maxXfer int, seed uint64) {
	integrityQ(t, d, maxXfer, seed, nil)
}

// integrityQ is integrity with a hook that sees the queue and its buffer memory
// before any I/O (to register the buffers) and after all of it (nil is no hook).
func integrityQ(t *testing.T, d blockdev.Device, maxXfer int, seed uint64, hook func(q blockdev.Queue, bufs []byte, done bool)) {
	const depth, total = 32, 400
	bs := d.BlockSize()
	span := min(d.Size(), 64<<20)
	r := rand.New(rand.NewPCG(seed, 99))
	type ext struct {
		off int64
		n   int
	}
	// Disjoint extents: one per slot of span/total bytes.
	slot := span / total / int64(bs) * int64(bs)
	exts := make([]ext, total)
	for i := range exts {
		n := bs * (1 + r.IntN(min(maxXfer, int(slot))/bs))
		if i%5 == 0 {
			n = min(maxXfer, int(slot)) // always some of the largest, multi-page PRPs
		}
		room := (slot - int64(n)) / int64(bs)
		exts[i] = ext{off: int64(i)*slot + r.Int64N(room+1)*int64(bs), n: n}
	}
	q, err := d.NewQueue(depth)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	bufs := blockdevtest.Buf(t, depth*maxXfer)
	slotBuf := func(s int) []byte { return bufs[s*maxXfer : (s+1)*maxXfer] }
	if hook != nil {
		hook(q, bufs, false)
		defer hook(q, bufs, true)
	}
	run := func(op blockdev.Op) {
		free := make([]int, 0, depth)
		for i := depth - 1; i >= 0; i-- {
			free = append(free, i)
		}
		owner := map[uint64]int{}
		out := make([]blockdev.Completion, depth)
		next, done := 0, 0
		for done < total {
			var reqs []blockdev.Request
			for next+len(reqs) < total && len(free) > len(reqs) {
				i := next + len(reqs)
				s := free[len(free)-1-len(reqs)]
				b := slotBuf(s)[:exts[i].n]
				if op == blockdev.OpWrite {
					blockdevtest.Fill(b, seed+uint64(i))
				} else {
					clear(b)
				}
				reqs = append(reqs, blockdev.Request{Op: op, Buf: b, Off: exts[i].off, Cookie: uint64(i)})
			}
			n, err := q.Submit(reqs)
			if err != nil {
				t.Fatal(err)
			}
			for k := 0; k < n; k++ {
				owner[reqs[k].Cookie] = free[len(free)-1]
				free = free[:len(free)-1]
			}
			next += n
			m, err := q.Poll(1, out)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range out[:m] {
				s := owner[c.Cookie]
				delete(owner, c.Cookie)
				e := exts[c.Cookie]
				if c.Err != nil || c.N != e.n {
					t.Fatalf("%v of extent %d (%d bytes at %d): %d, %v", op, c.Cookie, e.n, e.off, c.N, c.Err)
				}
				if op == blockdev.OpRead {
					want := make([]byte, e.n)
					blockdevtest.Fill(want, seed+c.Cookie)
					if !bytes.Equal(slotBuf(s)[:e.n], want) {
						t.Fatalf("extent %d (%d bytes at %d) read back different data", c.Cookie, e.n, e.off)
					}
				}
				free = append(free, s)
			}
			done += m
		}
	}
	run(blockdev.OpWrite)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	run(blockdev.OpRead)
	// And once more through the synchronous path, larger than one transfer.
	big := blockdevtest.Buf(t, 2*maxXfer+bs)
	for i := 0; i < total; i += 37 {
		e := exts[i]
		if _, err := d.ReadAt(big[:e.n], e.off); err != nil {
			t.Fatal(err)
		}
		want := make([]byte, e.n)
		blockdevtest.Fill(want, seed+uint64(i))
		if !bytes.Equal(big[:e.n], want) {
			t.Fatalf("ReadAt of extent %d differs", i)
		}
	}
	blockdevtest.Fill(big, seed)
	if _, err := d.WriteAt(big, span); err != nil {
		t.Fatal(err)
	}
	back := blockdevtest.Buf(t, len(big))
	if _, err := d.ReadAt(back, span); err != nil || !bytes.Equal(back, big) {
		t.Fatalf("WriteAt/ReadAt of %d bytes (split into transfers): %v, equal %v", len(big), err, bytes.Equal(back, big))
	}
}

// zeroes checks WriteZeroes and Deallocate.
func zeroes(t *testing.T, d blockdev.Device, wz func(off, n int64) error, dealloc func(off, n int64) error) {
	bs := d.BlockSize()
	buf := blockdevtest.Buf(t, 16*bs)
	blockdevtest.Fill(buf, 5)
	off := d.Size() - int64(64*bs)
	if _, err := d.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
	if err := wz(off+int64(4*bs), int64(8*bs)); err != nil {
		t.Fatal(err)
	}
	got := blockdevtest.Buf(t, 16*bs)
	if _, err := d.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(buf)
	clear(want[4*bs : 12*bs])
	if !bytes.Equal(got, want) {
		t.Fatal("Write Zeroes did not zero exactly its range")
	}
	if err := dealloc(off, int64(16*bs)); err != nil {
		t.Fatal(err)
	}
	if err := wz(d.Size()-int64(bs), int64(2*bs)); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Write Zeroes past the end: %v, want ENOSPC", err)
	}
	if err := dealloc(1, int64(bs)); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("misaligned Deallocate: %v, want EINVAL", err)
	}
}

// queueFaults checks the per-request errors every NVMe device gives.
func queueFaults(t *testing.T, d blockdev.Device, maxXfer int) {
	q, err := d.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	buf := blockdevtest.Buf(t, 2*maxXfer)
	var tl *TransferTooLargeError
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpWrite, Buf: buf, Off: 0}}); !errors.As(err, &tl) || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("queued write above the maximum transfer: %v", err)
	}
	var re *blockdev.RangeError
	if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpWrite, Buf: buf[:d.BlockSize()], Off: d.Size()}}); !errors.As(err, &re) {
		t.Fatalf("queued write beyond the namespace: %v", err)
	}
}

func TestGuestPassthrough(t *testing.T) {
	inGuest(t)
	c := guestController(t)
	path := genericPath(t, c)
	t.Logf("controller %s (%s, serial %s), namespace device %s", c.Address, c.Model, c.Serial, path)
	open := func(t *testing.T) *Passthrough {
		d, err := OpenPassthrough(path)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	t.Run("Conformance", func(t *testing.T) {
		blockdevtest.Run(t, func(t *testing.T) blockdev.Device { return open(t) })
	})
	d := open(t)
	defer func() { d.Close() }()
	t.Logf("%d blocks of %d bytes, max transfer %d, ONCS %#x", d.Size()/int64(d.BlockSize()), d.BlockSize(), d.MaxTransfer(), d.Controller().ONCS)
	t.Run("Integrity", func(t *testing.T) { integrity(t, d, d.MaxTransfer(), 1000) })
	t.Run("Zeroes", func(t *testing.T) { zeroes(t, d, d.WriteZeroes, d.Deallocate) })
	t.Run("NoAllocs", func(t *testing.T) { noAllocs(t, d) })
	t.Run("UnbindDuringIO", func(t *testing.T) {
		// The kernel's driver lets go of the controller while queues and ReadAt run on
		// its namespace: they must fail, not hang; then it takes the controller back.
		u := open(t)
		errs := hammer(t, u, func() {
			if err := os.WriteFile("/sys/bus/pci/drivers/nvme/unbind", []byte(c.Address), 0); err != nil {
				t.Errorf("unbind: %v", err)
			}
		})
		if errs == nil {
			t.Fatal("I/O across an unbind of the kernel driver ended without an error")
		}
		// Close every descriptor first: an open one keeps the old namespace's
		// instance number, and the rebound namespace would come back renamed.
		u.Close()
		d.Close()
		if err := os.WriteFile("/sys/bus/pci/drivers/nvme/bind", []byte(c.Address), 0); err != nil {
			t.Fatalf("rebind: %v", err)
		}
		for i := 0; i < 200; i++ {
			if k := guestController(t); k.Driver == "nvme" && len(k.Namespaces) > 0 {
				if _, err := os.Stat(genericPath(t, k)); err == nil {
					path = genericPath(t, k)
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		d = open(t)
		buf := blockdevtest.Buf(t, 4096)
		if _, err := d.ReadAt(buf, 0); err != nil {
			t.Fatalf("read after the kernel driver took the controller back: %v", err)
		}
	})
	t.Run("Faults", func(t *testing.T) {
		queueFaults(t, d, d.MaxTransfer())
		// A command the blockdev checks would refuse, sent raw: the controller's
		// answer must surface as a status error, not as success or a hang.
		buf := blockdevtest.Buf(t, d.BlockSize())
		c := d.rwCmd(ioRead, buf, d.Size())
		err := d.ioCmd(&c)
		var se *StatusError
		if !errors.As(err, &se) || se.SC != SCLBAOutOfRange {
			t.Fatalf("raw read beyond the namespace: %v, want LBA out of range", err)
		}
		// A misaligned buffer never reaches the kernel (which would bounce it).
		if _, err := d.ReadAt(buf[1:], 0); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("read into a misaligned buffer: %v, want EINVAL", err)
		}
	})
}

func TestGuestVFIO(t *testing.T) {
	inGuest(t)
	c := guestController(t)
	s := Sysfs{}
	// Data written through the kernel's driver must be there for the user-level one.
	marker := blockdevtest.Buf(t, 4096)
	blockdevtest.Fill(marker, 77)
	markerOff := int64(128 << 20) // beyond what integrity and zeroes write
	if c.Driver == "nvme" {
		path := genericPath(t, c)
		pt, err := OpenPassthrough(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pt.WriteAt(marker, markerOff); err != nil {
			t.Fatal(err)
		}
		// Bind must refuse while a namespace is open (here, by this process).
		err = s.Bind(c.Address)
		var iu *InUseError
		if !errors.As(err, &iu) || !strings.Contains(err.Error(), filepath.Base(path)+" open by pid") {
			t.Fatalf("Bind with %s open = %v, want an *InUseError naming it", path, err)
		}
		t.Logf("refused as expected: %v", err)
		pt.Close()
	}
	if err := s.Bind(c.Address); err != nil {
		t.Fatal(err)
	}
	c = guestController(t)
	if c.Driver != "vfio-pci" {
		t.Fatalf("after Bind the driver is %q", c.Driver)
	}
	open := func(t *testing.T, o VFIOOptions) *VFIO {
		t.Helper()
		v, err := OpenVFIO(c.Address, o)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	t.Run("Conformance", func(t *testing.T) {
		blockdevtest.Run(t, func(t *testing.T) blockdev.Device { return open(t, VFIOOptions{}) })
	})
	t.Run("ConformanceInterrupts", func(t *testing.T) {
		blockdevtest.Run(t, func(t *testing.T) blockdev.Device { return open(t, VFIOOptions{Interrupts: true}) })
	})
	t.Run("Integrity", func(t *testing.T) {
		v := open(t, VFIOOptions{})
		defer v.Close()
		t.Logf("%d blocks of %d bytes, max transfer %d, %d queue pairs, MQES %d", v.Size()/int64(v.BlockSize()), v.BlockSize(), v.MaxTransfer(), v.Queues(), v.mqes)
		got := blockdevtest.Buf(t, 4096)
		if _, err := v.ReadAt(got, markerOff); err != nil || !bytes.Equal(got, marker) {
			t.Fatalf("data written through the kernel driver reads back differently through VFIO (%v)", err)
		}
		q, err := v.NewQueue(32)
		if err != nil {
			t.Fatal(err)
		}
		hp := readTrimT("/proc/sys/vm/nr_hugepages")
		t.Logf("nr_hugepages %s; DMA memory from huge pages with a QD32 queue open: %d bytes", hp, v.HugePageBytes())
		if hp != "0" && v.HugePageBytes() == 0 {
			t.Fatal("huge pages are configured but the queue's DMA memory does not use them")
		}
		q.Close()
		integrity(t, v, v.MaxTransfer(), 2000)
	})
	t.Run("NoAllocs", func(t *testing.T) {
		// One process opens a VFIO group once: one device at a time.
		for _, o := range []VFIOOptions{{}, {Interrupts: true}} {
			v := open(t, o)
			noAllocs(t, v)
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("IntegrityInterrupts", func(t *testing.T) {
		v := open(t, VFIOOptions{Interrupts: true})
		defer v.Close()
		if len(v.efds) < 2 {
			t.Fatalf("interrupts requested but %d eventfds", len(v.efds))
		}
		integrity(t, v, v.MaxTransfer(), 3000)
	})
	t.Run("IntegrityRegisteredBuffers", func(t *testing.T) {
		// Zero copy: the queue's buffers are mapped for the controller once.
		v := open(t, VFIOOptions{})
		defer v.Close()
		integrityQ(t, v, v.MaxTransfer(), 4000, func(q blockdev.Queue, bufs []byte, done bool) {
			vq := q.(*vqueue)
			if !done {
				if err := vq.RegisterBuffers([][]byte{bufs}); err != nil {
					t.Fatal(err)
				}
				return
			}
			if vq.zeroCopy != 800 {
				t.Fatalf("%d of 800 queued requests went straight to the registered buffer", vq.zeroCopy)
			}
		})
	})
	t.Run("Zeroes", func(t *testing.T) {
		v := open(t, VFIOOptions{})
		defer v.Close()
		zeroes(t, v, v.WriteZeroes, v.Deallocate)
	})
	t.Run("Faults", func(t *testing.T) {
		v := open(t, VFIOOptions{})
		defer v.Close()
		queueFaults(t, v, v.MaxTransfer())
		err := v.rawSync(func(q *vqueue) error {
			c := Command{Opcode: ioRead, NSID: v.nsid, PRP1: q.slots[0].bIOVA}
			c.rw(uint64(v.size/int64(v.bs)), 1)
			return q.raw(&c, q.slots[0].bounce[:v.bs])
		})
		var se *StatusError
		if !errors.As(err, &se) || se.SC != SCLBAOutOfRange {
			t.Fatalf("raw read beyond the namespace: %v, want LBA out of range", err)
		}
	})
	t.Run("UnmappedIOVA", func(t *testing.T) {
		v := open(t, VFIOOptions{})
		defer v.Close()
		const bad = 0x70_0000_0000 // inside the 39-bit address width, never mapped
		kmsg(t, "expected DMA fault begin")
		err := v.rawSync(func(q *vqueue) error {
			c := Command{Opcode: ioRead, NSID: v.nsid, PRP1: bad}
			c.rw(0, 1)
			return q.rawSlot(&c)
		})
		// The emulated IOMMU logs the fault; QEMU may still report success.
		var log string
		for i := 0; i < 50; i++ {
			log = kernelLog(t)
			if regexp.MustCompile(`DMAR: \[DMA (Write|Read)[^\n]*\n?[^\n]*(?i:addr|fault)`).MatchString(log) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		kmsg(t, "expected DMA fault end")
		begin := strings.LastIndex(log, "expected DMA fault begin")
		if begin < 0 || !strings.Contains(log[begin:], "DMAR") {
			t.Fatalf("a read into unmapped IOVA %#x (status %v) left no DMAR fault in the kernel log", bad, err)
		}
		t.Logf("read into unmapped IOVA: status %v; kernel log: %s", err, strings.TrimSpace(log[begin:]))
		// The queue still works afterwards.
		got := blockdevtest.Buf(t, 4096)
		if _, err := v.ReadAt(got, markerOff); err != nil || !bytes.Equal(got, marker) {
			t.Fatalf("read after the DMA fault: %v", err)
		}
	})
	t.Run("TimeoutAndAbort", func(t *testing.T) {
		v := open(t, VFIOOptions{CommandTimeout: 200 * time.Millisecond})
		defer v.Close()
		qq, err := v.NewQueue(4)
		if err != nil {
			t.Fatal(err)
		}
		q := qq.(*vqueue)
		defer q.Close()
		buf := blockdevtest.Buf(t, 4096)
		// A command the controller never sees: written to the ring, doorbell not rung.
		q.hide(t, buf, markerOff, 7)
		out := make([]blockdev.Completion, 4)
		n, err := q.Poll(1, out)
		if err != nil || n != 1 || out[0].Cookie != 7 || !errors.Is(out[0].Err, ErrTimeout) {
			t.Fatalf("hidden command: %d, %v, %+v; want ErrTimeout", n, err, out[0])
		}
		if v.Aborts() != 1 || v.Timeouts() != 1 {
			t.Fatalf("aborts %d, timeouts %d; want 1 and 1", v.Aborts(), v.Timeouts())
		}
		// Ringing the doorbell now hands the controller both commands; the late
		// completion of the timed-out one frees its slot and reaches nobody.
		if _, err := q.Submit([]blockdev.Request{{Op: blockdev.OpRead, Buf: buf, Off: markerOff, Cookie: 8}}); err != nil {
			t.Fatal(err)
		}
		if n, err := q.Poll(1, out); err != nil || n != 1 || out[0].Cookie != 8 || out[0].Err != nil || !bytes.Equal(buf, marker) {
			t.Fatalf("read after the timeout: %d, %v, %+v", n, err, out[0])
		}
		for i := 0; i < 100 && q.lostCount() > 0; i++ {
			q.Poll(0, out)
			time.Sleep(10 * time.Millisecond)
		}
		if q.lostCount() != 0 {
			t.Fatal("the timed-out command's slot was never released")
		}
	})
	t.Run("ResetDuringIO", func(t *testing.T) {
		v := open(t, VFIOOptions{CommandTimeout: 5 * time.Second})
		errs := hammer(t, v, func() {
			if err := os.WriteFile(filepath.Join("/sys/bus/pci/devices", c.Address, "reset"), []byte("1"), 0); err != nil {
				t.Errorf("reset: %v", err)
			}
		})
		if !errors.Is(errs, ErrControllerFailed) && !errors.Is(errs, ErrTimeout) {
			t.Fatalf("I/O across a controller reset ended with %v, want ErrControllerFailed or ErrTimeout", errs)
		}
		v.Close()
		// The driver resets and enables the controller again on the next open.
		v = open(t, VFIOOptions{})
		defer v.Close()
		got := blockdevtest.Buf(t, 4096)
		if _, err := v.ReadAt(got, markerOff); err != nil || !bytes.Equal(got, marker) {
			t.Fatalf("read after reset and reopen: %v", err)
		}
	})
	t.Run("UnbindDuringIO", func(t *testing.T) {
		v := open(t, VFIOOptions{})
		unbound := make(chan error, 1)
		errs := hammer(t, v, func() {
			go func() {
				// Blocks in the kernel until the driver lets the device go.
				unbound <- os.WriteFile("/sys/bus/pci/drivers/vfio-pci/unbind", []byte(c.Address), 0)
			}()
		})
		if !errors.Is(errs, ErrGone) {
			t.Fatalf("I/O across an unbind ended with %v, want ErrGone", errs)
		}
		select {
		case err := <-unbound:
			if err != nil {
				t.Fatalf("unbind: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the kernel's unbind still waits for the driver after 30 s")
		}
		if !v.Gone() {
			t.Fatal("device does not report Gone")
		}
		buf := blockdevtest.Buf(t, 4096)
		if _, err := v.ReadAt(buf, 0); !errors.Is(err, ErrGone) {
			t.Fatalf("ReadAt after unbind: %v", err)
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	})
	// Give the controller back to the kernel and read the driver's data through it.
	t.Run("BackToKernel", func(t *testing.T) {
		dev := filepath.Join("/sys/bus/pci/devices", c.Address)
		if boundDriver(dev) == "vfio-pci" {
			if err := s.Unbind(c.Address); err != nil {
				t.Fatal(err)
			}
		} else {
			os.WriteFile(filepath.Join(dev, "driver_override"), []byte("\n"), 0)
			os.WriteFile("/sys/bus/pci/drivers_probe", []byte(c.Address), 0)
		}
		var path string
		for i := 0; i < 100; i++ {
			if k := guestController(t); k.Driver == "nvme" && len(k.Namespaces) > 0 {
				path = genericPath(t, k)
				if _, err := os.Stat(path); err == nil {
					break
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		pt, err := OpenPassthrough(path)
		if err != nil {
			t.Fatalf("kernel driver after unbind: %v", err)
		}
		defer pt.Close()
		got := blockdevtest.Buf(t, 4096)
		if _, err := pt.ReadAt(got, markerOff); err != nil || !bytes.Equal(got, marker) {
			t.Fatalf("marker through the kernel driver after VFIO: %v", err)
		}
	})
}

// hide puts a read for cookie on the submission ring without ringing the doorbell.
func (q *vqueue) hide(t *testing.T, buf []byte, off int64, cookie uint64) {
	t.Helper()
	cid := q.free[len(q.free)-1]
	q.free = q.free[:len(q.free)-1]
	s := &q.slots[cid]
	s.busy, s.aborted, s.op, s.cookie, s.n, s.buf, s.start = true, false, ioRead, cookie, len(buf), buf, q.now()
	c := Command{Opcode: ioRead, NSID: q.v.nsid, CID: cid, PRP1: s.bIOVA}
	c.rw(uint64(off)/uint64(q.v.bs), uint32(len(buf)/q.v.bs))
	c.Encode(q.sq[int(q.sqTail)*sqeSize:])
	if q.sqTail++; q.sqTail == q.entries {
		q.sqTail = 0
	}
	q.inflight++
}

// hammer runs queued and synchronous reads from three goroutines, calls disrupt once
// they are going, and returns the first error they stopped with. Every goroutine
// must stop within 60 s.
func hammer(t *testing.T, d blockdev.Device, disrupt func()) error {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	started := make(chan struct{}, 3)
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf, _ := alignedbuf.Alloc(8 * 4096)
			defer alignedbuf.Free(buf)
			started <- struct{}{}
			if w == 2 {
				for {
					if _, err := d.ReadAt(buf[:4096], 0); err != nil {
						errs <- err
						return
					}
				}
			}
			q, err := d.NewQueue(8)
			if err != nil {
				errs <- err
				return
			}
			defer q.Close()
			out := make([]blockdev.Completion, 8)
			for i := 0; ; i++ {
				var reqs []blockdev.Request
				for k := q.InFlight(); k < 8; k++ {
					reqs = append(reqs, blockdev.Request{Op: blockdev.OpRead, Buf: buf[k*4096 : (k+1)*4096], Off: int64((i*8 + k) % 1024 * 4096)})
				}
				if _, err := q.Submit(reqs); err != nil {
					errs <- err
					return
				}
				n, err := q.Poll(1, out)
				if err != nil {
					errs <- err
					return
				}
				for _, c := range out[:n] {
					if c.Err != nil {
						errs <- c.Err
						return
					}
				}
			}
		}(w)
	}
	for i := 0; i < 3; i++ {
		<-started
	}
	time.Sleep(200 * time.Millisecond)
	disrupt()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("I/O still running 60 s after the disruption: something hangs")
	}
	close(errs)
	var first error
	for err := range errs {
		t.Logf("I/O stopped with: %v", err)
		if first == nil {
			first = err
		}
	}
	return first
}

func readTrimT(p string) string { return readTrim(p) }

// noAllocs checks that a queued read and write, submitted and reaped, allocate
// nothing: the hot path's buffers and entries are all sized at NewQueue.
func noAllocs(t *testing.T, d blockdev.Device) {
	t.Helper()
	q, err := d.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	buf := blockdevtest.Buf(t, 8192)
	reqs := []blockdev.Request{{Op: blockdev.OpWrite, Buf: buf[:4096], Off: 1 << 20}, {Op: blockdev.OpRead, Buf: buf[4096:], Off: 1 << 20}}
	out := make([]blockdev.Completion, 4)
	allocs := testing.AllocsPerRun(50, func() {
		if n, err := q.Submit(reqs); n != 2 || err != nil {
			t.Fatalf("Submit: %d, %v", n, err)
		}
		for got := 0; got < 2; {
			n, err := q.Poll(1, out)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per queued write+read, want 0", allocs)
	}
}
