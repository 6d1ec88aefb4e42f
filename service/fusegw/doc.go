// Package fusegw is the FUSE gateway, the "legacy path": it serves any
// libservices.FS to unmodified programs through a FUSE mount. It depends on
// nothing but the libservices.FS contract, so the filesystem service can mount its
// instances with it and `polytropon mount` can mount a remote instance (an FS over
// the shared-memory IPC) the same way.
//
// # Design
//
// The gateway implements go-fuse's raw API (fuse.RawFileSystem), not its node API:
// the raw API lets the hot requests (READ, WRITE, GETATTR of a known node) run
// without an allocation or a global lock beyond one short critical section, and
// keeps the node table, whose rules are specific to a path-based FS, in this
// package where they are written down.
//
// The node table maps the kernel's node IDs to nodes. A node is one file of the FS
// as the kernel knows it: its inode number (libservices.Attr.Ino), its file type,
// the kernel's lookup count, and the names (parent node, name) under which the
// kernel looked it up, newest last. Nodes are keyed by inode number, so that the
// names of a hard-linked file share one kernel inode (and one page cache, and one
// set of cached attributes, which is what keeps nlink right after link(2)). The
// path of a node, which every libservices namespace operation needs, is computed
// from its newest name and cached until the next change of any name (a rename, an
// unlink, a lookup that finds a name moved), so a GETATTR of a known node builds no
// string.
//
// Files may also be changed through the direct path, behind the kernel's back, so a
// node's path is only a guess. Operations that act on a node by path check that the
// path still names the node's inode (same inode number and type) and answer ESTALE
// when it does not: the kernel's answer to ESTALE is to repeat the path walk with
// LOOKUP_REVAL, which looks every component up again, so stat(2), open(2) and the
// namespace system calls see the FS as it is now. Namespace operations (create,
// mkdir, unlink, rename, ...) check their parent directories the same way, so that
// a directory renamed through the direct path does not get files created in
// whatever took its name. GETATTR of a node with an open file uses Fstat of that
// file, which needs no path (an open unlinked file has none) and is right for
// fstat(2); the price is that a name replaced through the direct path while its
// file is open through the mount shows the open file until EntryTimeout.
//
// Kernel caching (Options): entries and attributes are cached for 1 s by default,
// the libfuse default. The kernel invalidates what it caches after every change
// made through this mount, so the bound matters only for changes made through the
// direct path: such a change is seen through FUSE at most EntryTimeout/AttrTimeout
// later (the kernel's auto_inval_data also drops the page cache of a file whose
// mtime or size changed when it refreshes the attributes). Failed lookups are not
// cached (NegativeTimeout 0), so a file created through the direct path is visible
// through FUSE at once. open(2) is close-to-open consistent, as on NFS: the
// gateway compares the version of the file it opens (mtime, ctime, size) with the
// one it last gave the kernel; if they differ, it has the kernel drop its
// attributes (a notification, before the open returns) and its pages, so a reader
// never sees a stale size; if they are equal, and the ctime is more than a second
// old (two changes within one coarse clock tick could look alike), the kernel
// keeps the file's pages (FOPEN_KEEP_CACHE) instead of reading them again.
//
// The kernel asks for security.capability before every write to a FUSE file (it
// never marks FUSE inodes S_NOSEC); a file found without one is answered from the
// node for AttrTimeout, like its other attributes, so that a write costs one FS
// call, not two; setting or removing an attribute through the mount forgets it.
// Unless the FS is a libservices.Flusher that holds data back (a write-back cache
// in the stack), the kernel is told not to send FLUSH at all (FOPEN_NOFLUSH).
//
// Mounting: as root the gateway opens /dev/fuse itself (close-on-exec) and calls
// mount(2) ("direct mount"); otherwise, or if mount(2) is refused, fusermount3
// mounts it. A server that may do neither (a service dropped to its tenant's
// user, with no_new_privs, so not even the setuid fusermount3) serves a
// connection root mounted for it: MountConnection (root: mount(2) with the
// server's user_id and group_id) and ServeConnection (the server, on the
// handed-over descriptor; its Unmount asks the mounter to Detach).
//
// Permissions: the mount always has default_permissions, so the kernel checks
// every request with its own rules against the attributes the gateway gave it,
// as on a local FS, before sending it (which matters once AllowOther lets other
// users in). The gateway then applies the same rules again through the FS's
// access.Checker (Options.Access, shared with a service's direct path; one of
// its own otherwise) in its Walked form: on the current attributes (the
// kernel's may be AttrTimeout old, or changed through the direct path), without
// search checks above the node the kernel reached, and doing what only the FS
// can: new files and directories get the caller's uid and gid (or a
// set-group-ID directory's gid and bit; a symbolic link keeps the FS's owner,
// the contract cannot change it), set-ID bits are cleared on a direct-I/O
// write (the kernel asks with FUSE_WRITE_KILL_SUIDGID), on a truncate and on an
// empty SETATTR (the kernel's own clearing skips set-group-ID without group
// execute), and trusted.* attributes are listed only to CAP_SYS_ADMIN. The
// caller's credentials are the request header's fsuid and fsgid, with the
// groups and capabilities of its thread (the header's pid is the thread id) from
// /proc (peercred.FromPID), kept per (pid, uid, gid) in a small table for at most
// 100 ms and never past the thread's end (creds.go); LOOKUP, GETATTR, READ and
// WRITE do not need them. Options.Quota, when set, counts every file and
// directory handle the gateway opens per caller uid.
//
// Mapping of operations: LOOKUP and GETATTR are Lstat (or Fstat), SETATTR is
// Setattr (or Ftruncate when the kernel passes a writable file handle), the
// other namespace and xattr requests the Checker's calls of the same name, MKNOD
// creates regular files only (EPERM for devices, FIFOs and sockets), RENAME with
// flags (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT) is EINVAL, since the
// contract has no atomic form of them and a Lstat-then-Rename emulation could
// replace a file created through the direct path in between; callers such as
// mv(1) fall back to plain rename. FLUSH (every close(2)) calls the FS's
// libservices.Flusher, so that a write-back failure reaches close(2); RELEASE
// closes the handle, and a Close error is logged, since the kernel drops the
// RELEASE reply. FSYNC with the datasync flag is Fdatasync.
// READDIR and READDIRPLUS serve one ReadDir snapshot per opened directory, taken at
// offset 0, so that an entry that exists for the whole listing is listed exactly
// once; READDIRPLUS also looks every entry up. Errors are the FS's syscall.Errno,
// passed to the kernel unchanged.
//
// What the contract cannot express: it has no no-follow form of Setattr and of the
// xattr calls, so SETATTR on a symbolic link succeeds only when it changes nothing
// (ENOSYS otherwise, which tar and cp ignore for symbolic links), and xattr calls
// on a symbolic link behave as on a link without attributes (get ENODATA, list
// empty, set EPERM). An open unlinked file has no path: fstat, read, write and
// ftruncate work through its handle, but fchmod, futimens, fgetxattr and
// reopening it through /proc/self/fd are ESTALE. POSIX and BSD locks are the
// kernel's, local to the mount, not shared with the direct path.
//
// Unmounting: Unmount detaches the mount, lazily (MNT_DETACH, fusermount3 -u -z)
// when it is busy, so it returns at once even while requests are in flight or
// files are open; the FS keeps being served for the files still open until they
// are closed, and Wait returns when the last request has been answered and every
// handle closed. A killed service leaves a dead mount (ENOTCONN) behind; Mount
// removes it (CleanStale) before mounting again, and refuses every other kind of
// mount at the mount point.
//
// # Performance
//
// `go test -run '^$' -bench . -benchmem -count 3 ./service/fusegw` (memfs behind
// the mount, client and server in one process; p50 per call and the ratio to the
// same call on a tmpfs file). With the default timeouts the kernel answers lstat
// and cached reads itself; a round trip (one FUSE request) costs tens of
// microseconds, almost all of it in the kernel and in waking threads. The gateway
// allocates nothing per READ or WRITE, and per LOOKUP only the path it joins.
// Figures with their machine and date: docs/results/2026-11-21/fusegw-bench.md.
//
// # Invariants
//
//   - Every node reachable from the table has a lookup count > 0, except the root,
//     which is never forgotten; a node with open handles has been looked up.
//   - parent.kids[name] == child exactly when (parent, name) is in child.names.
//   - A handle in the handle table is closed (libservices Close) exactly once, by
//     RELEASE or at shutdown, after every request that acquired it has released it.
//
// # Lock order
//
// gateway.mu (the node table, names, cached paths, per-node open lists) and
// gateway.hmu (the handle table) are never held together; a directory handle's
// dmu is taken alone or before gateway.mu (to read the directory's path). The
// credential table's mu is a leaf.
// Server.mu serializes Unmount and is taken alone.
package fusegw
