package pathperf

import "os/exec"

// Service is a filesystem service child process started by StartService: in its
// own process group (a terminal's ^C reaches only its parent, which stops it in
// order) and SIGTERMed by the kernel if its parent dies.
type Service struct{ p *serviceProc }

// StartService runs command(cfgPath) and waits for a line containing the word
// "ready" on its stdout. mountpoint is the FUSE mount it makes ("" for none),
// which Stop makes sure is gone. On error the process is gone and no mount is left.
func StartService(command func(cfgPath string) *exec.Cmd, cfgPath, mountpoint string) (*Service, error) {
	p, err := startService(command, cfgPath, mountpoint)
	if err != nil {
		return nil, err
	}
	return &Service{p: p}, nil
}

// Pid is the service's process id.
func (s *Service) Pid() int { return s.p.cmd.Process.Pid }

// Stop SIGTERMs the service, waits for exit status 0 (SIGKILL after a timeout),
// and makes sure its mount is gone; it returns what went wrong.
func (s *Service) Stop() error { return s.p.stop() }

// Output is the tail of the service's output, for error messages.
func (s *Service) Output() string { return s.p.out.String() }

// ServiceConfig is the configuration of a service with the default stack (a
// write-back cache over a union of the writable upper and the read-only lower
// passthrough branch), its instance at the root of the service namespace and,
// when fuse is not empty, mounted there.
func ServiceConfig(socket, upper, lower, fuse string) string {
	return serviceConfig(socket, upper, lower, fuse, "", &Options{Backend: BackendHost})
}

// MaxSocketPath is the longest Unix socket path plus one (sun_path's size).
const MaxSocketPath = maxSocketPath

// MachineInfo describes this machine, dir being the work directory.
func MachineInfo(dir string) Machine { return machineInfo(dir) }

// MountPoints lists this mount namespace's mount points.
func MountPoints() ([]string, error) { return mountPoints() }

// IsMounted reports whether mountpoint is a mount point.
func IsMounted(mountpoint string) (bool, error) { return isMounted(mountpoint) }

// Detach lazily unmounts a FUSE mount whose server is gone.
func Detach(mountpoint string) error { return detach(mountpoint) }
