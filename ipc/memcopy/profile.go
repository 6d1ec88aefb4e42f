package memcopy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"time"
)

// ProfileVersion is the profile format this build reads and writes.
const ProfileVersion = 1

// ProfileFile is the profile's file name in its directory.
const ProfileFile = "copy-profile.json"

// maxProfileBytes bounds what LoadProfile reads: a real profile is a few KiB
// even with its measurements.
const maxProfileBytes = 4 << 20

// Errors LoadProfile and NewCopier wrap; match them with errors.Is.
var (
	// ErrBadProfile: the file is not a profile this build can use.
	ErrBadProfile = errors.New("memcopy: bad copy profile")
	// ErrOtherCPU: the profile was tuned on another kind of CPU. Callers log
	// it as a warning and keep the built-in copy.
	ErrOtherCPU = errors.New("memcopy: copy profile was tuned on another CPU")
)

// A Profile is the result of `polytropon tune copy`: which kernel to use for
// each size class on one kind of CPU, with the measurements behind the choice.
type Profile struct {
	Version int    `json:"version"`
	CPU     CPUKey `json:"cpu"`
	// CPUName is the marketing name, for people reading the file.
	CPUName   string    `json:"cpu_name,omitempty"`
	GoVersion string    `json:"go_version,omitempty"`
	Created   time.Time `json:"created"`
	// Classes lists the size classes the tuner measured; classes not listed
	// use the built-in copy.
	Classes []ClassChoice `json:"classes"`
	// Measurements are the medians the choice was made from; informational.
	Measurements []Measurement `json:"measurements,omitempty"`
}

// Measurement is one kernel's median throughput at one size in one setting of
// a tuning run.
type Measurement struct {
	Setting string  `json:"setting"`
	Bytes   int64   `json:"bytes"`
	Kernel  string  `json:"kernel"`
	GBps    float64 `json:"gbps"`
}

// ClassChoice is the kernel chosen for the lengths [MinBytes, MaxBytes], a
// size class of ClassRange.
type ClassChoice struct {
	MinBytes int64  `json:"min_bytes"`
	MaxBytes int64  `json:"max_bytes"`
	Kernel   string `json:"kernel"`
	// Speedup is the chosen kernel's throughput over copy()'s in the tuning
	// run (geometric mean over the measured settings); 1 when copy() kept.
	Speedup float64 `json:"speedup"`
}

// LoadProfile reads and checks a profile file. It does not compare the CPU;
// NewCopier does.
func LoadProfile(path string) (*Profile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("memcopy: profile: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxProfileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("memcopy: profile %s: %w", path, err)
	}
	if len(data) > maxProfileBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadProfile, path, maxProfileBytes)
	}
	p, err := ParseProfile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParseProfile decodes and checks a profile's JSON.
func ParseProfile(data []byte) (*Profile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: not valid profile JSON: %v", ErrBadProfile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the profile", ErrBadProfile)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks the profile's structure: version, CPU key and that every
// class is a real size class, listed once, naming a kernel this build knows.
func (p *Profile) Validate() error {
	if p.Version != ProfileVersion {
		return fmt.Errorf("%w: version %d, this build reads version %d (re-run polytropon tune copy)",
			ErrBadProfile, p.Version, ProfileVersion)
	}
	if p.CPU.Vendor == "" {
		return fmt.Errorf("%w: no CPU vendor", ErrBadProfile)
	}
	seen := map[int]bool{}
	for i, c := range p.Classes {
		if c.MinBytes <= 0 || c.MinBytes&(c.MinBytes-1) != 0 || c.MaxBytes != 2*c.MinBytes-1 {
			return fmt.Errorf("%w: class %d [%d, %d] is not a power-of-two size class", ErrBadProfile, i, c.MinBytes, c.MaxBytes)
		}
		cls := ClassOf(int(c.MinBytes))
		if cls >= numClasses || int64(int(c.MinBytes)) != c.MinBytes {
			return fmt.Errorf("%w: class %d starts at %d bytes, too large", ErrBadProfile, i, c.MinBytes)
		}
		if seen[cls] {
			return fmt.Errorf("%w: size class starting at %d bytes listed twice", ErrBadProfile, c.MinBytes)
		}
		seen[cls] = true
		if kernelIndex(c.Kernel) < 0 {
			return fmt.Errorf("%w: class [%d, %d] names kernel %q, which this build does not have",
				ErrBadProfile, c.MinBytes, c.MaxBytes, c.Kernel)
		}
	}
	return nil
}

// Marshal returns the profile as indented JSON.
func (p *Profile) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("memcopy: encoding profile: %w", err)
	}
	return append(b, '\n'), nil
}

// Save writes the profile to path atomically (temporary file and rename),
// creating the directory if needed.
func (p *Profile) Save(path string) error {
	data, err := p.Marshal()
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("memcopy: profile directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".copy-profile-*")
	if err != nil {
		return fmt.Errorf("memcopy: saving profile: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("memcopy: saving profile: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("memcopy: saving profile: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("memcopy: saving profile: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("memcopy: saving profile: %w", err)
	}
	return nil
}

// NewCopier builds a Copier from a profile. A nil profile gives the built-in
// copy everywhere. A profile from another kind of CPU gives an error wrapping
// ErrOtherCPU; one naming a kernel this CPU or build cannot run gives one
// wrapping ErrBadProfile.
func NewCopier(p *Profile) (*Copier, error) {
	if p == nil {
		return &Copier{builtinBelow: math.MaxInt}, nil
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if host := HostCPU(); !p.CPU.Equal(host) {
		return nil, fmt.Errorf("%w: profile is for %v, this is %v (re-run polytropon tune copy)", ErrOtherCPU, p.CPU, host)
	}
	c := &Copier{profile: p}
	for _, cc := range p.Classes {
		i := kernelIndex(cc.Kernel)
		if !registry[i].available {
			return nil, fmt.Errorf("%w: kernel %q needs %s, which this CPU or build lacks", ErrBadProfile, cc.Kernel, registry[i].needs)
		}
		c.table[ClassOf(int(cc.MinBytes))] = uint8(i)
	}
	c.builtinBelow = math.MaxInt
	for class := 1; class < numClasses; class++ {
		if c.table[class] != 0 {
			lo, _ := ClassRange(class)
			c.builtinBelow = int(lo)
			break
		}
	}
	return c, nil
}

// DefaultProfilePath is where `polytropon tune copy` writes the profile and
// where drivers look for it: /var/lib/polytropon/ for the daemon, otherwise
// $XDG_CONFIG_HOME/polytropon/ or ~/.config/polytropon/. It returns "" when a
// user's configuration directory cannot be determined (no $HOME).
func DefaultProfilePath(daemon bool) string {
	if daemon {
		return filepath.Join("/var/lib/polytropon", ProfileFile)
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "polytropon", ProfileFile)
}

// LoadDefault loads the profile at DefaultProfilePath(daemon) and makes it the
// process-wide Copier. With no profile file it returns (nil, nil) and leaves
// the built-in copy in place, which is the normal state of an untuned machine.
// Any other error (a corrupt profile, one from another CPU) also leaves the
// built-in copy in place; drivers log it as a warning and go on.
func LoadDefault(daemon bool) (*Profile, error) {
	path := DefaultProfilePath(daemon)
	if path == "" {
		return nil, nil
	}
	p, err := LoadProfile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c, err := NewCopier(p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	SetDefault(c)
	return p, nil
}
