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
// --root container is the host's root, confined by capabilities only.
//
// # Invariants
//
//   - A pool's service never runs a thread outside the pool's cgroup: it is started
//     by EnterAndExec (`polytropon pool-exec`), which joins the cgroup before it
//     execs the service.
//   - The state directory is created 0700 by root and stays root's (group the
//     pool's gid, mode 0751: traversable, not listable, writable by root only),
//     because root reads the service's config there and chowns the socket: a
//     tenant that could rename in it could swap in a symlink or its own config.
//     The socket is 0660 uid:gid once the service is ready. The service itself admits only root, its own uid and the pool's uid
//     (SO_PEERCRED).
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
// current service process, its state and restart count). Neither is held while
// waiting for a process; a supervisor takes running.mu alone, and Server.mu
// (writeRecord, which takes running.mu inside) only without running.mu held.
// The elastic driver's locks (see pool/elastic) are never held while it calls
// into the pool. Serve and Close are not called concurrently.
package pool
