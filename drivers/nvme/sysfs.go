package nvme

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Sysfs finds NVMe controllers and moves them between the kernel's nvme driver and
// vfio-pci. Its roots default to /sys, /proc and /dev; tests point them at a fake
// tree.
type Sysfs struct {
	Root string // sysfs mount, "" = /sys
	Proc string // procfs mount, "" = /proc
}

func (s Sysfs) root() string {
	if s.Root == "" {
		return "/sys"
	}
	return s.Root
}

func (s Sysfs) proc() string {
	if s.Proc == "" {
		return "/proc"
	}
	return s.Proc
}

// Controller is one NVMe PCI function as List reports it.
type Controller struct {
	Address    string // PCI address, e.g. 0000:00:04.0
	Vendor     string // PCI vendor and device IDs, e.g. 0x1b36
	Device     string
	Driver     string // bound driver: nvme, vfio-pci or ""
	IOMMUGroup string // "" without an IOMMU
	Name       string // kernel controller name (nvme0) while the nvme driver has it
	Model      string // from sysfs while the nvme driver has it
	Serial     string
	Namespaces []string // block devices (nvme0n1) of the controller
}

// nvmeClass is PCI class 01 (mass storage), subclass 08 (NVM), interface 02 (NVMe).
const nvmeClass = "0x010802"

var pciAddrRE = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

// List returns the NVMe controllers on the PCI bus, by address.
func (s Sysfs) List() ([]Controller, error) {
	devs, err := filepath.Glob(filepath.Join(s.root(), "bus/pci/devices/*"))
	if err != nil {
		return nil, err
	}
	var out []Controller
	for _, d := range devs {
		if readTrim(filepath.Join(d, "class")) != nvmeClass {
			continue
		}
		c, err := s.controller(filepath.Base(d))
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, nil
}

func (s Sysfs) devDir(addr string) string { return filepath.Join(s.root(), "bus/pci/devices", addr) }

func (s Sysfs) controller(addr string) (Controller, error) {
	if !pciAddrRE.MatchString(addr) {
		return Controller{}, fmt.Errorf("nvme: %q is not a PCI address (want DDDD:BB:DD.F, e.g. 0000:00:04.0)", addr)
	}
	d := s.devDir(addr)
	if _, err := os.Stat(d); err != nil {
		return Controller{}, fmt.Errorf("nvme: no PCI device %s: %w", addr, err)
	}
	if cl := readTrim(filepath.Join(d, "class")); cl != nvmeClass {
		return Controller{}, fmt.Errorf("nvme: PCI device %s has class %s, not an NVMe controller (%s)", addr, cl, nvmeClass)
	}
	c := Controller{Address: addr, Vendor: readTrim(filepath.Join(d, "vendor")), Device: readTrim(filepath.Join(d, "device")), Driver: boundDriver(d)}
	if g, err := os.Readlink(filepath.Join(d, "iommu_group")); err == nil {
		c.IOMMUGroup = filepath.Base(g)
	}
	ctrls, _ := filepath.Glob(filepath.Join(d, "nvme", "nvme*"))
	for _, cd := range ctrls {
		c.Name = filepath.Base(cd)
		c.Model = readTrim(filepath.Join(cd, "model"))
		c.Serial = readTrim(filepath.Join(cd, "serial"))
		ents, _ := os.ReadDir(cd)
		for _, e := range ents {
			if nsRE.MatchString(e.Name()) {
				c.Namespaces = append(c.Namespaces, e.Name())
			}
		}
	}
	sort.Strings(c.Namespaces)
	return c, nil
}

var (
	nsRE      = regexp.MustCompile(`^nvme\d+(c\d+)?n\d+$`)
	genericRE = regexp.MustCompile(`^ng\d+n\d+$`)
)

// InUseError lists what holds a controller's namespaces.
type InUseError struct {
	Address string
	Users   []string // e.g. "nvme0n1 mounted at /data", "ng0n1 open by pid 42 (fio)"
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("nvme: %s is in use, refusing to take it from the kernel: %s", e.Address, strings.Join(e.Users, "; "))
}

// Users reports what holds the namespaces of the controller at addr: mounts, swap,
// stacked block devices (holders) and processes with one of its device nodes open.
func (s Sysfs) Users(addr string) ([]string, error) {
	c, err := s.controller(addr)
	if err != nil {
		return nil, err
	}
	if c.Name == "" {
		return nil, nil
	}
	cd := filepath.Join(s.devDir(addr), "nvme", c.Name)
	names := map[string]bool{c.Name: true} // device node names that count as a use
	devnums := map[string]string{}         // "maj:min" of block devices -> name
	var users []string
	ents, _ := os.ReadDir(cd)
	for _, e := range ents {
		n := e.Name()
		switch {
		case genericRE.MatchString(n):
			names[n] = true
		case nsRE.MatchString(n):
			names[n] = true
			devnums[readTrim(filepath.Join(cd, n, "dev"))] = n
			parts, _ := os.ReadDir(filepath.Join(cd, n))
			for _, p := range parts {
				pd := filepath.Join(cd, n, p.Name())
				if _, err := os.Stat(filepath.Join(pd, "partition")); err == nil {
					names[p.Name()] = true
					devnums[readTrim(filepath.Join(pd, "dev"))] = p.Name()
					users = append(users, holders(pd, p.Name())...)
				}
			}
			users = append(users, holders(filepath.Join(cd, n), n)...)
		}
	}
	if f, err := os.Open(filepath.Join(s.proc(), "self/mountinfo")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) > 4 {
				if n, ok := devnums[fs[2]]; ok {
					users = append(users, fmt.Sprintf("%s mounted at %s", n, fs[4]))
				}
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile(filepath.Join(s.proc(), "swaps")); err == nil {
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if fs := strings.Fields(l); len(fs) > 0 && names[filepath.Base(fs[0])] {
				users = append(users, fmt.Sprintf("%s used as swap", filepath.Base(fs[0])))
			}
		}
	}
	users = append(users, s.openers(func(target string) (string, bool) {
		if !strings.HasPrefix(target, "/dev/") {
			return "", false
		}
		n := filepath.Base(target)
		return n, names[n]
	})...)
	return users, nil
}

func holders(dir, name string) []string {
	hs, _ := os.ReadDir(filepath.Join(dir, "holders"))
	var out []string
	for _, h := range hs {
		out = append(out, fmt.Sprintf("%s held by %s", name, h.Name()))
	}
	return out
}

// openers scans /proc/*/fd for descriptors whose target match accepts.
func (s Sysfs) openers(match func(target string) (string, bool)) []string {
	pids, _ := filepath.Glob(filepath.Join(s.proc(), "[0-9]*"))
	var out []string
	for _, p := range pids {
		pid := filepath.Base(p)
		fds, _ := os.ReadDir(filepath.Join(p, "fd"))
		seen := map[string]bool{}
		for _, fd := range fds {
			t, err := os.Readlink(filepath.Join(p, "fd", fd.Name()))
			if err != nil {
				continue
			}
			if n, ok := match(t); ok && !seen[n] {
				seen[n] = true
				out = append(out, fmt.Sprintf("%s open by pid %s (%s)", n, pid, readTrim(filepath.Join(p, "comm"))))
			}
		}
	}
	return out
}

func (s Sysfs) write(path, val string) error {
	if err := os.WriteFile(path, []byte(val), 0o200); err != nil {
		return fmt.Errorf("nvme: write %q to %s: %w", val, path, err)
	}
	return nil
}

// waitDriver waits up to 5 s until the device's driver satisfies ok.
func (s Sysfs) waitDriver(addr string, ok func(string) bool) (string, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := boundDriver(s.devDir(addr))
		if ok(d) {
			return d, nil
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("nvme: %s still bound to %q after 5 s", addr, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Bind hands the controller at addr from its driver to vfio-pci, refusing with an
// *InUseError while any of its namespaces is mounted, used as swap, held by a
// stacked device or open.
func (s Sysfs) Bind(addr string) error {
	c, err := s.controller(addr)
	if err != nil {
		return err
	}
	if c.Driver == "vfio-pci" {
		return nil
	}
	users, err := s.Users(addr)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return &InUseError{Address: addr, Users: users}
	}
	if c.IOMMUGroup == "" {
		return fmt.Errorf("nvme: %s has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on) to use VFIO", addr)
	}
	drv := filepath.Join(s.root(), "bus/pci/drivers/vfio-pci")
	if _, err := os.Stat(drv); err != nil && s.Root == "" {
		if out, err := exec.Command("modprobe", "vfio-pci").CombinedOutput(); err != nil {
			return fmt.Errorf("nvme: vfio-pci is not loaded and modprobe failed: %v: %s", err, out)
		}
	}
	if _, err := os.Stat(drv); err != nil {
		return fmt.Errorf("nvme: the vfio-pci driver is not available: %w", err)
	}
	d := s.devDir(addr)
	if err := s.write(filepath.Join(d, "driver_override"), "vfio-pci"); err != nil {
		return err
	}
	if c.Driver != "" {
		if err := s.write(filepath.Join(d, "driver/unbind"), addr); err != nil {
			return err
		}
	}
	if err := s.write(filepath.Join(s.root(), "bus/pci/drivers_probe"), addr); err != nil {
		return err
	}
	_, err = s.waitDriver(addr, func(d string) bool { return d == "vfio-pci" })
	return err
}

// Unbind gives the controller at addr back from vfio-pci to the kernel's driver,
// refusing while a process has its VFIO group open.
func (s Sysfs) Unbind(addr string) error {
	c, err := s.controller(addr)
	if err != nil {
		return err
	}
	if c.Driver != "vfio-pci" {
		return fmt.Errorf("nvme: %s is bound to %q, not vfio-pci: nothing to unbind", addr, c.Driver)
	}
	if c.IOMMUGroup != "" {
		grp := "/dev/vfio/" + c.IOMMUGroup
		if users := s.openers(func(t string) (string, bool) { return grp, t == grp }); len(users) > 0 {
			return &InUseError{Address: addr, Users: users}
		}
	}
	d := s.devDir(addr)
	if err := s.write(filepath.Join(d, "driver_override"), "\n"); err != nil {
		return err
	}
	if err := s.write(filepath.Join(d, "driver/unbind"), addr); err != nil {
		return err
	}
	if err := s.write(filepath.Join(s.root(), "bus/pci/drivers_probe"), addr); err != nil {
		return err
	}
	if _, err := s.waitDriver(addr, func(d string) bool { return d != "" }); err != nil {
		return errors.New("nvme: " + addr + " was released by vfio-pci but no kernel driver took it")
	}
	return nil
}
