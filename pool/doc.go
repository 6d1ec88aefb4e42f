// Package pool is a tenant's pool of reserved resources: its configuration (the
// pools: section of `polytropon serve`'s YAML), its cgroup (cpuset, memory, pids,
// blkio throttle, through github.com/containerd/cgroups/v3: v1 in legacy and
// hybrid mode, v2 in unified mode), and its filesystem service started inside the
// cgroup and supervised (Serve); and containers in a pool (`polytropon run`:
// Lookup, StartContainer, ContainerInit) with their own mount, PID, UTS and IPC
// namespaces.
//
// Elasticity (pool/elastic, elastic.go): a pool's `elasticity:` block makes serve
// run a driver that every interval samples the pool (its cgroup's CPU time and
// memory, its service's status over the service's root-only control socket) and
// applies the deterministic policy's decisions (service workers, page-cache
// size) within the block's bounds; Server.Decisions and
// RunDir/decisions-POOL.json (elastic.ReadDecisions) hold the recent ones.
//
// Slices 1 and 2 of issue 11, and elasticity. Not here yet: run --rootfs
// (pivot_root into the pool's instance through the FUSE gateway), per-pool
// networks (netstack) and `polytropon status` of pools. The cgroup v2 code path is written but not
// exercised by the tests (the development machines run hybrid mode, whose unified
// hierarchy has no controllers).
//
// # Invariants
//
//   - A pool's service never runs a thread outside the pool's cgroup: it is started
//     by EnterAndExec (`polytropon pool-exec`), which joins the cgroup before it
//     execs the service.
//   - The state directory is created 0700 by root and only then given to the
//     pool's uid:gid with mode 0750; the socket is 0660 uid:gid once the service is
//     ready. The service itself admits only root, its own uid and the pool's uid
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
//   - A container's command is in the pool's cgroups from its first instruction:
//     its init (ContainerInit, pid 1) joins them before it forks the command. The
//     command is never pid 1, so default signal dispositions apply to it, and
//     orphans are reaped by the init; the container ends when the command does.
//
// # Lock order
//
// running.mu guards the current service process and the restart count; it is
// never held while waiting for a process. The elastic driver's locks (see
// pool/elastic) are never held while it calls into the pool. Server has no lock: Serve and Close are
// not called concurrently.
package pool
