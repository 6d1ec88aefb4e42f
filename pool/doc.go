// Package pool is a tenant's pool of reserved resources: its configuration (the
// pools: section of `polytropon serve`'s YAML), its cgroup (cpuset, memory, pids,
// blkio throttle, through github.com/containerd/cgroups/v3: v1 in legacy and
// hybrid mode, v2 in unified mode), and its filesystem service started inside the
// cgroup and supervised (Serve).
//
// This is the first slice of issue 11. Not here yet: `polytropon run` (containers
// with namespaces and --rootfs), per-pool networks (netstack), elasticity and
// `polytropon status` of pools. The cgroup v2 code path is written but not
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
//
// # Lock order
//
// running.mu guards the current service process and the restart count; it is
// never held while waiting for a process. Server has no lock: Serve and Close are
// not called concurrently.
package pool
