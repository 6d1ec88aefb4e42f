package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeNVMeTree is a sysfs/procfs pair with one kernel-bound NVMe controller whose
// namespace pid 7 holds open.
func fakeNVMeTree(t *testing.T) (sys, proc string) {
	t.Helper()
	dir := t.TempDir()
	sys, proc = filepath.Join(dir, "sys"), filepath.Join(dir, "proc")
	dev := filepath.Join(sys, "bus/pci/devices/0000:01:00.0")
	files := map[string]string{
		dev + "/class":                    "0x010802\n",
		dev + "/vendor":                   "0x144d\n",
		dev + "/device":                   "0xa808\n",
		dev + "/driver_override":          "(null)\n",
		dev + "/nvme/nvme0/model":         "Samsung SSD 970 EVO\n",
		dev + "/nvme/nvme0/serial":        "S4EWNX0N\n",
		dev + "/nvme/nvme0/nvme0n1/dev":   "259:0\n",
		dev + "/nvme/nvme0/ng0n1/dev":     "240:0\n",
		proc + "/self/mountinfo":          "22 1 8:1 / / rw - ext4 /dev/vda1 rw\n",
		proc + "/7/comm":                  "postgres\n",
		sys + "/bus/pci/drivers/nvme/new": "",
	}
	for p, c := range files {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink(filepath.Join(sys, "bus/pci/drivers/nvme"), dev+"/driver")
	os.Symlink(filepath.Join(sys, "kernel/iommu_groups/12"), dev+"/iommu_group")
	os.MkdirAll(proc+"/7/fd", 0o755)
	os.Symlink("/dev/nvme0n1", proc+"/7/fd/3")
	return sys, proc
}

func TestNVMeList(t *testing.T) {
	sys, proc := fakeNVMeTree(t)
	out, err := runCLI(t, "nvme", "list", "--sysfs", sys, "--proc", proc)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PCI ADDRESS", "0000:01:00.0", "Samsung SSD 970 EVO", "S4EWNX0N", "nvme", "12", "nvme0n1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("nvme list output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "nvme", "list", "--json", "--sysfs", sys, "--proc", proc)
	if err != nil {
		t.Fatal(err)
	}
	var cs []struct{ Address, Driver, IOMMUGroup string }
	if err := json.Unmarshal([]byte(out), &cs); err != nil || len(cs) != 1 || cs[0].Driver != "nvme" || cs[0].IOMMUGroup != "12" {
		t.Fatalf("nvme list --json: %v, %+v\n%s", err, cs, out)
	}
	empty := t.TempDir()
	if out, err := runCLI(t, "nvme", "list", "--sysfs", empty); err != nil || !strings.Contains(out, "no NVMe controllers") {
		t.Fatalf("list without controllers: %q, %v", out, err)
	}
}

func TestNVMeBindRefusesOpenNamespace(t *testing.T) {
	sys, proc := fakeNVMeTree(t)
	_, err := runCLI(t, "nvme", "bind", "0000:01:00.0", "--sysfs", sys, "--proc", proc)
	if err == nil || !strings.Contains(err.Error(), "nvme0n1 open by pid 7 (postgres)") || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("bind of a controller in use: %v", err)
	}
	if _, err := runCLI(t, "nvme", "bind", "01:00.0", "--sysfs", sys, "--proc", proc); err == nil || !strings.Contains(err.Error(), "not a PCI address") {
		t.Fatalf("bind of a malformed address: %v", err)
	}
	if _, err := runCLI(t, "nvme", "unbind", "0000:01:00.0", "--sysfs", sys, "--proc", proc); err == nil || !strings.Contains(err.Error(), "not vfio-pci") {
		t.Fatalf("unbind of a kernel-bound controller: %v", err)
	}
}
