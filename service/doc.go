// Package service is a tenant's filesystem service: it hosts the filesystem
// instances built from its configuration's stacks (libservices), serves them to
// fslib clients over the direct path (the ipc back driver) and to unmodified
// programs through FUSE mounts (service/fusegw), and reports metrics on a Prometheus
// endpoint and in its status document (`polytropon status`).
//
// # Request path
//
// A back-driver worker hands each validated descriptor to the handler, which
// resolves the path in the mount table (longest prefix, built once at start and
// read-only afterwards, so lookups take no lock), calls the instance's stack
// through its access.Checker, and answers in the descriptor. Handle operations
// find their object through two per-client tables: the back driver's
// (client-visible handle with a generation -> index) and the handler's (index ->
// open file, directory or lock). A path is copied out of shared memory into a Go
// string before use, because the client may rewrite its buffer at any time and
// libservices may keep the string (cache keys): that copy is the one allocation
// the handler adds to a path operation (the Attr of a stat comes from a pool;
// TestHandlerStatAllocs); reads and writes allocate nothing.
//
// # Permissions
//
// Every request is checked against its client's credentials with the kernel's
// rules (libservices/access): the uid, gid, groups and capabilities the kernel
// reported at the handshake (SO_PEERCRED, SO_PEERGROUPS, /proc), kept in the
// client's state from ClientOpened on, never bytes the client wrote. Each
// instance has one Checker, which its FUSE mounts share (fusegw.Options.Access).
// A path is resolved and checked once, and the stack acts on the resolved path;
// a stat costs one lookup in the Checker's directory memo on top of the stack's
// own. Reads and writes through a handle are checked at open, as the kernel does;
// a write, truncate or fallocate clears set-ID bits for a client without
// CAP_FSETID (one atomic load for a file known to have none). Directory listings
// read the directory resolved at open. The limits (a concurrent rename can race
// a check; the service's own uid bounds what it reaches) are the package
// access's.
//
// # Faults
//
// A client that disconnects or dies is reclaimed by the back driver after its
// in-flight requests finish; the handler then closes every handle it left open
// (flushing write-back data through the stack's Close) and releases its locks.
// Close (SIGTERM in `polytropon service`) stops accepting, lets in-flight requests
// finish, closes clients' handles, unmounts FUSE mountpoints and closes the
// instances, which flushes write-back caches. A SIGKILLed service loses only what
// was not fsynced; its stale FUSE mountpoints are cleaned at the next start.
//
// # Who the service is (privilege separation)
//
// A tenant's service runs as the tenant's user, with no capabilities: serve
// starts each pool's service so, and `polytropon service` started by root
// does when its configuration has a user (Config.User). What needs root is
// done by a privileged parent before the service starts, and handed over as
// inherited descriptors (Handoff): Prepare makes the direct path's listening
// socket (the user's, 0660), the control socket (root's, 0600), the metrics
// listener and every FUSE mount (fusegw.MountConnection: the user's mount,
// default_permissions); the process is dropped to the user
// (internal/privdrop, through `polytropon pool-exec`); Inherit completes the
// drop before anything else and reads the configuration from its inherited
// descriptor; Start serves the inherited listeners and connections
// (fusegw.ServeConnection). The service asks its parent over a socket pair
// (the monitor: one request, "detach", no arguments) to detach its FUSE
// mounts when it stops; the parent detaches what is left and removes the
// sockets once it exited (Parent.Cleanup), and RunParent is that parent for
// a standalone service (it forwards SIGTERM and SIGINT). A root service
// without a user warns loudly at start; Status says who the service runs as
// (UID, GID, Privileged, RunsAs). A service that is not root checks at start
// that its user can use every passthrough branch and names the directory
// and the fix when it cannot.
//
// # Control
//
// With Config.Control set, the service also listens on a control socket (0600,
// by SO_PEERCRED root alone when a privileged parent started it, root and its
// own uid for a user's own service) that serve uses: ping (serve's health
// check, answered by the control goroutine, not the workers), its status
// document, SetWorkers (the back driver adds or retires workers between
// requests) and ResizeCaches (every resizable page cache of its stacks, each
// within its own max_size). Tenants read status over the direct path; they
// cannot resize their service.
//
// # Locks
//
// OpLock gives advisory, exclusive, non-blocking whole-file locks per instance
// (EAGAIN when held), held until the lock handle is closed or the client goes away.
// They exclude clients of this service only.
//
// Lock order: back.ClientCtx's handle-table lock and the handler's clientState.mu
// are never held together (the handler takes one, releases it, then the other);
// object.mu (a directory's listing), lockTable.mu and Service.monitorMu (one
// request to the parent at a time) are leaves.
package service
