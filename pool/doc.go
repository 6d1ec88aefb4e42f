// Package pool is a tenant's pool of reserved resources: its configuration (the
// pools: section of `polytropon serve`'s YAML), its cgroup (cpuset, memory, pids,
// blkio throttle, through github.com/containerd/cgroups/v3: v1 in legacy and
// hybrid mode, v2 in unified mode), and its filesystem service started inside the
// cgroup and supervised (Serve); its network (a `network:` block: netstack's
// namespace, veth, addresses and rate limits, in which the service and the
// containers run); exclusive cpusets for pools on disjoint cores (opt-in
// exclusive_cpus); containers in a pool (`polytropon run`: Lookup,
// StartContainer, ContainerInit) with their own mount, PID, UTS and IPC
// namespaces, optionally with the pool's filesystem instance as their root
// (ContainerFUSE, pivot_root) and the terminal's foreground; and the pools'
// status (Status: reservations, cgroup usage, service state, and a Decisions
// slot for the elasticity controller).
//
// # Who the service is
//
// A pool's service runs as the pool's uid and gid (both required, neither 0)
// with no supplementary groups, every capability set empty, no_new_privs
// and not dumpable: whatever a bug in the service lets through, the kernel
// still limits it to the pool user's rights. serve is its privileged parent
// (OpenSSH-style privilege separation, service.Parent): for each start it
// makes the service's direct-path socket (the pool user's, 0660), its
// control socket (root's, 0600: only root may connect, so the tenant cannot
// resize its own service) and its FUSE mounts (mount(2) with
// user_id/group_id the pool's, default_permissions, allow_other as
// configured), hands them over as inherited descriptors with the service's
// configuration (which the pool's user may not read: the state directory's
// files are root's), and `polytropon pool-exec` joins the pool's cgroups and
// network namespace, drops to the pool's user for good (internal/privdrop)
// and execs `polytropon service --handoff`. The service asks serve, over a
// socket pair, to detach its FUSE mounts when it stops (it may not); serve
// detaches what is left and removes the sockets once it exited, and makes
// everything afresh for a restart. The copy profile is the daemon's
// (/var/lib/polytropon, readable by all). A passthrough branch the pool's
// user cannot use fails the start, naming the directory and the fix: serve
// never chowns a configured path.
//
// # Health
//
// serve pings each service's control socket every health.interval (default
// 2 s) with a deadline of health.timeout (5 s); after health.failures (3)
// failures in a row it kills the service with SIGKILL (which a SIGSTOPped
// process cannot delay) and restarts it through the ordinary backoff, logs
// why, and counts it (status: restarts, "unhealthy" restarts, the last
// reason). A service that stops answering is so detected within
// Health.Bound() = interval + failures x max(timeout, interval), 17 s by
// default. The ping is answered by the control socket's own goroutine, not
// by the workers, so a service that is merely busy (all workers in slow
// I/O) is never killed; workers that make no progress while requests wait
// are logged once per episode instead (a deadlock inside the stack that
// leaves the process answering is not detected: it looks like slow I/O).
//
// Elasticity (pool/elastic, elastic.go): a pool's `elasticity:` block makes serve
// run a driver that every interval samples the pool (its cgroup's CPU time and
// memory, its service's status over the service's root-only control socket) and
// applies the deterministic policy's decisions (service workers, page-cache
// size) within the block's bounds; Server.Decisions and
// RunDir/decisions-POOL.json (elastic.ReadDecisions) hold the recent ones.
//
// The cgroup v2 code paths (limits, statistics, partition roots) are written
// but not exercised by the tests (the development machines run hybrid mode,
// whose unified hierarchy has no controllers).
//
// # Who serves a container's root
//
// With --rootfs, the FUSE gateway of the container's root is a process of the
// container (`polytropon container-fuse`, ContainerFUSE), the init's child in
// the container's namespaces and the pool's cgroups: it dials the service
// before anything is mounted, mounts a tmpfs stage and the instance on it, and
// the init pivot_roots into the mount. Not the init itself: a process the init
// forks holds the init's descriptors until its execve has read the program from
// the mount, so a gateway in the init that died then would leave /dev/fuse open
// with nobody to answer, and the exec'ing child (and with it the init, its PID
// namespace and run) hung for good. The gateway forks nothing. The mount is
// only in the container's mount namespace, and goes with the container: the
// init exits when the command does, the kernel kills the gateway with the PID
// namespace, and the connection is gone.
//
// The image is the tenant's, so its programs are confined: until pivot_root
// /proc and /dev are mounted only through O_PATH|O_NOFOLLOW descriptors of the
// instance's directories and /dev is built in the private stage (a symlink in
// the image cannot point a mount or a file creation at a host path); /dev is
// nodev (its nodes are bind mounts); /proc/sys, sysrq-trigger, irq and bus are
// read-only; the command runs as the pool's uid and gid (the root mount allows
// other users; the kernel checks permission bits), or with `run --root` as uid 0,
// either way with the capability bounding set cut to Docker's default set
// without CAP_MKNOD, and no_new_privs. There is no user namespace: uid 0 in a
// --root container is the host's root, confined by capabilities only; its
// files still reach the instance through the service, which acts as the
// pool's user (a --root container cannot read what that user cannot, and
// what it creates belongs to that user).
//
// # Invariants
//
//   - A pool's service never runs a thread outside the pool's cgroup, nor with
//     more than the pool user's rights: it is started by EnterAndExecAs
//     (`polytropon pool-exec`), which joins the cgroup, then drops to the pool's
//     user, then execs the service.
//   - The state directory is created 0700 by root and stays root's (group the
//     pool's gid, mode 0751: traversable, not listable, writable by root only),
//     because root reads the service's config there and makes the sockets: a
//     tenant that could rename in it could swap in a symlink or its own config.
//     The socket is 0660 uid:gid from its creation (serve makes it before the
//     service starts), the control socket root's 0600. The service admits only
//     root and the pool's uid on the direct path, root alone on the control
//     socket (SO_PEERCRED).
//   - serve holds no copy of a descriptor it handed a service (a FUSE
//     connection it kept would outlive the service and hang its users).
//   - Pool cgroups live under one parent (Config.Cgroup) nested in serve's own
//     cgroup; everything under it belongs to the serve holding RunDir/serve.lock,
//     so a new serve kills and removes whatever it finds there (reconcile), and
//     removes the state directories the previous one recorded in RunDir/pools.json.
//   - Serve removes from a state directory only the files it puts there.
//   - The elastic driver stops before the services do (Close), so it never
//     resizes a service being stopped; its decisions files are removed at
//     Close and by reconcile.
//   - RunDir/pools.json names a pool's socket and cgroups only once they exist,
//     and Lookup trusts it only while a serve holds RunDir/serve.lock.
//   - A pool's network is named from the pool's name only (pt-NAME,
//     pt-NAME-h), and recorded in RunDir/pools.json before it is created; a new
//     serve tears down the recorded networks and those of its configured pools
//     before it creates any. On Close it goes after the cgroup, when no process
//     is left in it.
//   - Exclusive cpusets: only for pools whose CPUs no other pool has; the
//     parent holds exactly the pools' CPUs and is exclusive first; a serve
//     starting resets a parent left exclusive (not exclusive, all CPUs).
//   - A container's command is in the pool's cgroups from its first instruction:
//     its init (ContainerInit, pid 1) joins them before it forks the command. The
//     command is never pid 1, so default signal dispositions apply to it, and
//     orphans are reaped by the init; the container ends when the command does.
//
// # Lock order
//
// Server.mu (the pools list, the record's writes) before running.mu (the
// current service process, its state and restart counts). Neither is held while
// waiting for a process; a supervisor takes running.mu alone, and Server.mu
// (writeRecord, which takes running.mu inside) only without running.mu held.
// A health watcher takes no lock: it only answers its supervisor on a channel.
// The elastic driver's locks (see pool/elastic) are never held while it calls
// into the pool. Serve and Close are not called concurrently.
package pool
