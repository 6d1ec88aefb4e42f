package nvme

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCommandEncode(t *testing.T) {
	b := make([]byte, 64)
	for i := range b {
		b[i] = 0xee // Encode must overwrite every byte
	}
	c := Command{Opcode: ioWrite, CID: 0x1234, NSID: 7, PRP1: 0x1_0000_1000, PRP2: 0x2_0000_0000}
	c.rw(0x1_2345_6789, 8)
	c.CDW15 = 0xabcd
	c.Encode(b)
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
	if le32(0) != 0x12340001 || le32(4) != 7 {
		t.Fatalf("dword 0/1 = %#x %#x", le32(0), le32(4))
	}
	for off := 8; off < 24; off += 4 {
		if le32(off) != 0 {
			t.Fatalf("reserved/metadata dword at %d = %#x, want 0", off, le32(off))
		}
	}
	if binary.LittleEndian.Uint64(b[24:]) != 0x1_0000_1000 || binary.LittleEndian.Uint64(b[32:]) != 0x2_0000_0000 {
		t.Fatal("PRP entries misplaced")
	}
	if le32(40) != 0x23456789 || le32(44) != 1 || le32(48) != 7 || le32(60) != 0xabcd {
		t.Fatalf("cdw10-12,15 = %#x %#x %#x %#x", le32(40), le32(44), le32(48), le32(60))
	}
}

func TestDecodeCompletion(t *testing.T) {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:], 0xdeadbeef)
	binary.LittleEndian.PutUint32(b[8:], 5|3<<16)
	// cid 9, phase 1, status SCT 0 SC 0x80 with DNR
	binary.LittleEndian.PutUint32(b[12:], 9|1<<16|uint32(0x80|1<<14)<<17)
	c := DecodeCompletion(b)
	if c.DW0 != 0xdeadbeef || c.SQHead != 5 || c.SQID != 3 || c.CID != 9 || c.Phase != 1 {
		t.Fatalf("%+v", c)
	}
	err := statusError(ioWrite, c.Status)
	var se *StatusError
	if !errors.As(err, &se) || se.SC != SCLBAOutOfRange || !se.DNR || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("status error %v", err)
	}
	if !strings.Contains(err.Error(), "LBA out of range") {
		t.Fatalf("error does not say what went wrong: %v", err)
	}
	if statusError(ioRead, 0) != nil || statusError(ioRead, 1<<14) != nil {
		t.Fatal("status without code must be success")
	}
	if err := statusError(ioRead, SCDataTransferError|SCTGeneric<<8); !errors.Is(err, unix.EIO) {
		t.Fatalf("data transfer error: %v, want EIO", err)
	}
}

func identifyPage() []byte { return make([]byte, 4096) }

func TestParseIdentify(t *testing.T) {
	b := identifyPage()
	binary.LittleEndian.PutUint16(b[0:], 0x1b36)
	copy(b[4:24], "deadbeef            ")
	copy(b[24:64], "QEMU NVMe Ctrl                          ")
	copy(b[64:72], "7.2.0   ")
	b[77] = 7
	binary.LittleEndian.PutUint32(b[516:], 256)
	binary.LittleEndian.PutUint16(b[520:], 1<<2|1<<3)
	c, err := ParseIdentifyController(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.VendorID != 0x1b36 || c.Serial != "deadbeef" || c.Model != "QEMU NVMe Ctrl" || c.Firmware != "7.2.0" || c.NN != 256 ||
		!c.SupportsDSM() || !c.SupportsWriteZeroes() {
		t.Fatalf("%+v", c)
	}
	if got := c.MaxTransfer(4096, 1<<30); got != 512<<10 {
		t.Fatalf("MaxTransfer(MDTS 7) = %d, want 512 KiB", got)
	}
	if got := c.MaxTransfer(4096, 128<<10); got != 128<<10 {
		t.Fatalf("MaxTransfer bounded = %d", got)
	}
	c.MDTS = 0
	if got := c.MaxTransfer(4096, 128<<10); got != 128<<10 {
		t.Fatalf("MaxTransfer(no limit) = %d", got)
	}
	if _, err := ParseIdentifyController(b[:100]); err == nil {
		t.Fatal("short identify data accepted")
	}

	n := identifyPage()
	binary.LittleEndian.PutUint64(n[0:], 131072)
	n[25] = 1 // two formats
	n[26] = 1 // formatted with the second
	binary.LittleEndian.PutUint32(n[128:], 9<<16)
	binary.LittleEndian.PutUint32(n[132:], 12<<16)
	ns, err := ParseIdentifyNamespace(n)
	if err != nil {
		t.Fatal(err)
	}
	if ns.Blocks != 131072 || ns.BlockSize != 4096 || ns.Metadata != 0 || ns.OptimalIO != 0 {
		t.Fatalf("%+v", ns)
	}
	n[24] = 1 << 4
	binary.LittleEndian.PutUint16(n[72:], 15)
	if ns, _ = ParseIdentifyNamespace(n); ns.OptimalIO != 16*4096 {
		t.Fatalf("OptimalIO %d", ns.OptimalIO)
	}
	n[26] = 5 // beyond NLBAF
	if _, err := ParseIdentifyNamespace(n); err == nil {
		t.Fatal("namespace formatted with a missing LBA format accepted")
	}
	n[26] = 0
	binary.LittleEndian.PutUint32(n[128:], 8<<16)
	if _, err := ParseIdentifyNamespace(n); err == nil {
		t.Fatal("256-byte blocks accepted")
	}
	binary.LittleEndian.PutUint32(n[128:], 9<<16|8)
	ns, _ = ParseIdentifyNamespace(n)
	if err := ns.check("x"); err == nil || !strings.Contains(err.Error(), "metadata") {
		t.Fatalf("metadata format: %v", err)
	}
}

func TestBuildPRP(t *testing.T) {
	list := make([]uint64, MaxPRPListEntries)
	const base, lst = 0x1_0000_0000, 0x2_0000_0000
	for _, c := range []struct {
		name       string
		iova       uint64
		n          int
		prp1, prp2 uint64
		entries    int
	}{
		{"one block", base, 512, base, 0, 0},
		{"one page", base, 4096, base, 0, 0},
		{"two pages", base, 8192, base, base + 4096, 0},
		{"offset into page, fits", base + 512, 3584, base + 512, 0, 0},
		{"offset into page, two pages", base + 512, 4096, base + 512, base + 4096, 0},
		{"three pages uses a list", base, 3 * 4096, base, lst, 2},
		{"offset, spills into a list", base + 512, 8192, base + 512, lst, 2},
		{"128 KiB", base, 128 << 10, base, lst, 31},
		{"largest", base, (MaxPRPListEntries + 1) * 4096, base, lst, MaxPRPListEntries},
	} {
		p, err := BuildPRP(c.iova, c.n, list, lst)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.PRP1 != c.prp1 || p.PRP2 != c.prp2 || p.List != c.entries {
			t.Fatalf("%s: %+v, want %#x %#x %d", c.name, p, c.prp1, c.prp2, c.entries)
		}
		for i := 0; i < p.List; i++ {
			want := (c.iova/4096+1)*4096 + uint64(i)*4096
			if list[i] != want {
				t.Fatalf("%s: list[%d] = %#x, want %#x", c.name, i, list[i], want)
			}
		}
	}
	if _, err := BuildPRP(base, (MaxPRPListEntries+2)*4096, list, lst); err == nil {
		t.Fatal("transfer beyond one PRP list accepted")
	}
	if _, err := BuildPRP(base+2, 512, list, lst); err == nil {
		t.Fatal("unaligned IOVA accepted")
	}
	if _, err := BuildPRP(base, 0, list, lst); err == nil {
		t.Fatal("empty transfer accepted")
	}
}

func TestEncodeDSMRanges(t *testing.T) {
	buf := make([]byte, 4096)
	n, next := EncodeDSMRanges(buf, 100, 108)
	if n != 1 || next != 108 || binary.LittleEndian.Uint32(buf[4:]) != 8 || binary.LittleEndian.Uint64(buf[8:]) != 100 {
		t.Fatalf("one range: %d %d %x", n, next, buf[:16])
	}
	// More blocks than 256 ranges of 2^32-1 cover: the rest is left for the next call.
	to := uint64(300) * maxDSMBlocks
	n, next = EncodeDSMRanges(buf, 0, to)
	if n != maxDSMRanges || next != maxDSMRanges*maxDSMBlocks {
		t.Fatalf("full command: %d ranges, next %d", n, next)
	}
	if got := binary.LittleEndian.Uint64(buf[255*16+8:]); got != 255*maxDSMBlocks {
		t.Fatalf("last range starts at %d", got)
	}
}

func TestParseCAPAndDoorbells(t *testing.T) {
	// The CAP of QEMU 7.2's controller, as the reference probe read it.
	c := ParseCAP(0x004018200f0107ff)
	if c.MQES != 2048 || c.DSTRD != 0 || c.Timeout != 7500*time.Millisecond || !c.NVMCSS || c.MPSMin != 4096 || c.MPSMax != 4096<<4 {
		t.Fatalf("%+v", c)
	}
	if sq, cq := DoorbellOffsets(0, 0); sq != 0x1000 || cq != 0x1004 {
		t.Fatalf("admin doorbells %#x %#x", sq, cq)
	}
	if sq, cq := DoorbellOffsets(3, 2); sq != 0x1000+6*16 || cq != 0x1000+7*16 {
		t.Fatalf("stride 16 doorbells %#x %#x", sq, cq)
	}
}

func TestCheckRange(t *testing.T) {
	if err := checkRange(4096, 8192, 512, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := checkRange(100, 512, 512, 1<<20); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("misaligned offset: %v", err)
	}
	if err := checkRange(0, 0, 512, 1<<20); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("empty range: %v", err)
	}
	if err := checkRange(1<<20-512, 1024, 512, 1<<20); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("range past the end: %v", err)
	}
}

// fakeTree builds a sysfs and procfs with one kernel-bound NVMe controller (with a
// partitioned namespace) at 0000:00:04.0, one vfio-bound at 0000:00:05.0 and a
// network card, and returns the roots.
func fakeTree(t *testing.T) (Sysfs, string) {
	t.Helper()
	dir := t.TempDir()
	sys, proc := filepath.Join(dir, "sys"), filepath.Join(dir, "proc")
	mk := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []struct{ addr, class, drv, group string }{
		{"0000:00:04.0", nvmeClass, "nvme", "3"},
		{"0000:00:05.0", nvmeClass, "vfio-pci", "4"},
		{"0000:00:02.0", "0x020000", "e1000", "1"},
	} {
		dev := filepath.Join(sys, "bus/pci/devices", d.addr)
		mk(filepath.Join(dev, "class"), d.class+"\n")
		mk(filepath.Join(dev, "vendor"), "0x1b36\n")
		mk(filepath.Join(dev, "device"), "0x0010\n")
		mk(filepath.Join(dev, "driver_override"), "(null)\n")
		os.MkdirAll(filepath.Join(sys, "bus/pci/drivers", d.drv), 0o755)
		mk(filepath.Join(sys, "bus/pci/drivers", d.drv, "unbind"), "")
		link(filepath.Join(sys, "bus/pci/drivers", d.drv), filepath.Join(dev, "driver"))
		link(filepath.Join(sys, "kernel/iommu_groups", d.group), filepath.Join(dev, "iommu_group"))
	}
	mk(filepath.Join(sys, "bus/pci/drivers_probe"), "")
	cd := filepath.Join(sys, "bus/pci/devices/0000:00:04.0/nvme/nvme0")
	mk(filepath.Join(cd, "model"), "QEMU NVMe Ctrl\n")
	mk(filepath.Join(cd, "serial"), "deadbeef\n")
	mk(filepath.Join(cd, "dev"), "241:0\n")
	mk(filepath.Join(cd, "nvme0n1/dev"), "259:0\n")
	os.MkdirAll(filepath.Join(cd, "nvme0n1/holders"), 0o755)
	mk(filepath.Join(cd, "nvme0n1/nvme0n1p1/dev"), "259:1\n")
	mk(filepath.Join(cd, "nvme0n1/nvme0n1p1/partition"), "1\n")
	mk(filepath.Join(cd, "ng0n1/dev"), "240:0\n")
	mk(filepath.Join(proc, "self/mountinfo"), "22 1 8:1 / / rw - ext4 /dev/vda1 rw\n")
	mk(filepath.Join(proc, "swaps"), "Filename Type Size Used Priority\n")
	mk(filepath.Join(proc, "42/comm"), "fio\n")
	os.MkdirAll(filepath.Join(proc, "42/fd"), 0o755)
	return Sysfs{Root: sys, Proc: proc}, proc
}

func TestSysfsList(t *testing.T) {
	s, _ := fakeTree(t)
	cs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("List found %d controllers, want 2 (the network card is not one): %+v", len(cs), cs)
	}
	k, v := cs[0], cs[1]
	if k.Address != "0000:00:04.0" || k.Driver != "nvme" || k.IOMMUGroup != "3" || k.Name != "nvme0" || k.Model != "QEMU NVMe Ctrl" ||
		k.Serial != "deadbeef" || strings.Join(k.Namespaces, ",") != "nvme0n1" {
		t.Fatalf("kernel-bound controller: %+v", k)
	}
	if v.Address != "0000:00:05.0" || v.Driver != "vfio-pci" || v.IOMMUGroup != "4" || v.Name != "" {
		t.Fatalf("vfio-bound controller: %+v", v)
	}
}

func TestSysfsRefusesBusyController(t *testing.T) {
	for _, c := range []struct {
		name, want string
		setup      func(t *testing.T, s Sysfs, proc string)
	}{
		{"mounted partition", "nvme0n1p1 mounted at /data", func(t *testing.T, s Sysfs, proc string) {
			os.WriteFile(filepath.Join(proc, "self/mountinfo"), []byte("22 1 8:1 / / rw - ext4 /dev/vda1 rw\n40 22 259:1 / /data rw - ext4 /dev/nvme0n1p1 rw\n"), 0o644)
		}},
		{"open generic device", "ng0n1 open by pid 42 (fio)", func(t *testing.T, s Sysfs, proc string) {
			os.Symlink("/dev/ng0n1", filepath.Join(proc, "42/fd/5"))
		}},
		{"swap", "nvme0n1p1 used as swap", func(t *testing.T, s Sysfs, proc string) {
			os.WriteFile(filepath.Join(proc, "swaps"), []byte("Filename Type Size Used Priority\n/dev/nvme0n1p1 partition 100 0 -2\n"), 0o644)
		}},
		{"held by device mapper", "nvme0n1 held by dm-0", func(t *testing.T, s Sysfs, proc string) {
			os.MkdirAll(filepath.Join(s.Root, "bus/pci/devices/0000:00:04.0/nvme/nvme0/nvme0n1/holders/dm-0"), 0o755)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, proc := fakeTree(t)
			c.setup(t, s, proc)
			err := s.Bind("0000:00:04.0")
			var iu *InUseError
			if !errors.As(err, &iu) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Bind = %v, want an *InUseError naming %q", err, c.want)
			}
			if got := readTrim(filepath.Join(s.Root, "bus/pci/devices/0000:00:04.0/driver_override")); got != "(null)" {
				t.Fatalf("refused Bind changed driver_override to %q", got)
			}
		})
	}
}

func TestSysfsBadInput(t *testing.T) {
	s, proc := fakeTree(t)
	for _, c := range []struct{ addr, want string }{
		{"00:04.0", "not a PCI address"},
		{"0000:00:09.0", "no PCI device"},
		{"0000:00:02.0", "not an NVMe controller"},
	} {
		if err := s.Bind(c.addr); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Bind(%s) = %v, want %q", c.addr, err, c.want)
		}
		if err := s.Unbind(c.addr); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Unbind(%s) = %v, want %q", c.addr, err, c.want)
		}
	}
	if err := s.Unbind("0000:00:04.0"); err == nil || !strings.Contains(err.Error(), "not vfio-pci") {
		t.Errorf("Unbind of a kernel-bound controller = %v", err)
	}
	os.Symlink("/dev/vfio/4", filepath.Join(proc, "42/fd/7"))
	err := s.Unbind("0000:00:05.0")
	var iu *InUseError
	if !errors.As(err, &iu) || !strings.Contains(err.Error(), "/dev/vfio/4 open by pid 42") {
		t.Errorf("Unbind of a controller in use = %v", err)
	}
	// A kernel-bound controller is not for the VFIO driver.
	if _, err := OpenVFIO("0000:00:04.0", VFIOOptions{SysfsRoot: s.Root}); err == nil || !strings.Contains(err.Error(), "polytropon nvme bind 0000:00:04.0") {
		t.Errorf("OpenVFIO of a kernel-bound controller = %v", err)
	}
}

func TestOpenPassthroughRejectsNonDevice(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	os.WriteFile(p, make([]byte, 4096), 0o600)
	if _, err := OpenPassthrough(p); err == nil || !strings.Contains(err.Error(), "/dev/ngXnY") {
		t.Fatalf("OpenPassthrough(regular file) = %v", err)
	}
	if _, err := OpenPassthrough(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenPassthrough(missing) = %v", err)
	}
}
