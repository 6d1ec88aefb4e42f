// Package access is the kernel's permission rules as one package: a Checker
// wraps a filesystem instance's stack (a libservices.FS) and checks every call
// against the credentials of the caller it is made for, as Linux would check the
// same system call by the same process on a local filesystem. Both ways into a
// service use it: the direct path's handler (service/handler.go, the client's
// credentials from the handshake) and the FUSE gateway (service/fusegw, the
// credentials of each request's caller). It is not a sandbox of its own: the
// service runs as the pool's uid, so whatever a bug here lets through, the kernel
// still limits the service to that uid's rights (see SECURITY.md).
//
// # Credentials
//
// A Cred (internal/peercred.Cred) comes from the kernel, never from bytes a
// client wrote: uid, gid and supplementary groups decide the owner, group and
// other classes; privileges come from the effective capabilities in Caps, never
// from uid 0 alone (a uid-0 caller without capabilities is the owner of root's
// files and nothing more). A nil Cred gets EACCES everywhere.
//
// # The rules
//
// Each is written after its Linux function and named in its doc; the exported
// ones (Permission, MayDelete, MayCreate, MayMknod, MayOpen, MayLink,
// MayFollowLink, MayCreateInSticky, StripSGID, NewOwner, Setattr, KillPriv,
// XattrPermission) are pure functions, table-tested, and usable by a caller
// that holds the attributes itself (mknod and FIFOs, issue 21). The Checker
// applies them in the kernel's order, so that a call that breaks two rules gets
// the kernel's errno:
//
//   - search permission on every directory a path leads through (may_lookup),
//     directory symbolic links included, before anything beyond it;
//   - access bits for the caller's class (generic_permission), overridden by
//     CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH as the kernel does;
//   - creating needs write and search on the directory after EEXIST
//     (may_create); removing and renaming away too, and in a sticky directory
//     ownership of the file or the directory or CAP_FOWNER (may_delete);
//     a directory moved to another parent needs write on itself;
//   - open: may_open (ELOOP, EISDIR, access bits for the access mode and O_TRUNC,
//     O_NOATIME only for the owner or CAP_FOWNER), may_create_in_sticky with
//     fs.protected_regular and fs.protected_fifos;
//   - a final symbolic link is followed only as may_follow_link allows with
//     fs.protected_symlinks, and hard links as may_linkat allows with
//     fs.protected_hardlinks (the values of this host, read at New);
//   - setattr_prepare: chown_ok, chgrp_ok, chmod by the owner or CAP_FOWNER with
//     set-group-ID dropped outside the file's group, utimensat's rules (both
//     times "now": ownership or write permission; anything else: ownership),
//     truncate with write permission;
//   - set-user-ID and set-group-ID cleared on write, truncate and fallocate by a
//     caller without CAP_FSETID and on every chown of a non-directory
//     (file_remove_privs, chown_common);
//   - xattr_permission: trusted.* only with CAP_SYS_ADMIN (and listed only to
//     it), user.* by the access bits and, on a sticky directory, the owner;
//     security.capability set or removed only with CAP_SETFCAP, other
//     security.* with CAP_SYS_ADMIN;
//   - new files and directories get the caller's uid and its gid, or the
//     directory's gid under a set-group-ID directory, where a new directory
//     also gets set-group-ID; a new executable file's set-group-ID is dropped
//     for a stranger to that group (inode_init_owner, mode_strip_sgid).
//
// The FS creates a file with its own owner (the service's uid); the Checker
// then gives it to the caller with a chown, and sets the mode the caller asked
// for afterwards (a file is created without set-ID bits until then). A service
// without CAP_CHOWN cannot give files to another uid: the chown fails, the file
// keeps the service's owner, and the create still succeeds (and the Checker
// stops asking: the refusal will not change); pools have one uid today, the
// service's, so their files are their tenant's either way. Where the caller
// may write and search the directory, a create is tried first (O_EXCL below)
// and a removal outside a sticky directory is made without looking at the
// victim: the FS's own answers (EEXIST, ENOENT, EISDIR) then come in the
// kernel's order, and the common create or unlink costs no extra lookup.
//
// # Resolving a path once
//
// A Checker resolves each path itself before acting: every component looked up
// (Lstat) in order, directory symbolic links followed inside the FS and clamped
// at its root as libservices do, search permission checked on every directory
// entered; the call then goes to the FS with the resolved path, so that what was
// checked and what is acted on are the same names. Walking costs one Lstat per
// component; a stat would cost that many calls, so the Checker remembers, per
// directory path, where it resolves to and the mode, owner and group of every
// directory on the way (the memo: a direct-mapped table of immutable entries,
// read with one atomic load, no lock and no allocation). A remembered walk is
// valid for one generation: a process-wide counter that every call that may
// change a directory's mode, owner or name, or a file's set-ID bits, bumps
// after the change, through any Checker of the process: rmdir, rename,
// setattr, mkdir (the new directory's owner is set after it exists), the
// clearing of set-ID bits. Creating a regular file, a link or a name, and
// removing a non-directory, change no directory, and keep what is remembered
// unless the FS below says it changed directories as a side effect (a union's
// copy-up: libservices.Reshaper; an FS that cannot say is taken to have) or
// the removed name may be a symbolic link some remembered walk went through
// (any walk that followed a link since the last bump). So a store that
// creates and removes files all the time does not make every stat walk its
// path again. The caller's search permission is checked against the
// remembered modes each time; nothing is trusted for a time. A File (kept by
// the caller beside each open handle) remembers in the same way that the file
// has no set-ID bits, so that a write costs one atomic load, not a stat
// (the kernel's S_NOSEC).
//
// Known limits, to be read with SECURITY.md:
//
//   - Check, then act: a path-based stack checks names and then acts on them, so
//     another caller of the same tenant who renames concurrently can race a
//     check (the kernel holds dentry locks across both; issue 20's
//     resolve-once will close it). The service's own uid bounds what such a race
//     can reach.
//   - Changes made behind the service's back (on the host, in a branch
//     directory) are not seen by the memo until the next change through the
//     service, or Invalidate.
//   - POSIX ACLs are not evaluated: a Checker refuses to set them (EOPNOTSUPP),
//     so none is made through the service.
//   - The contract has no call that changes a symbolic link's own owner, so a
//     link keeps the FS's owner (issue 21), which protected_symlinks and sticky
//     directories then see.
//   - A read-only branch answers EROFS after the checks, where the kernel says
//     EROFS first.
//
// # FUSE
//
// A FUSE kernel mounted with default_permissions has checked each request with
// these rules already, against the attributes the gateway gave it, and it names
// files by the node it reached, not by a path from the root (a process below a
// directory it can no longer search still reaches its working directory). The
// gateway therefore uses Walked: the same rules on the current attributes,
// without search checks above the file, and with what only the FS can do (new
// files' owners, set-ID bits cleared on a direct-I/O write, trusted.* hidden
// from lists).
//
// # Concurrency
//
// A Checker is safe for concurrent use; its memo is written with atomic stores
// of immutable entries and read without a lock. It holds no lock of its own
// (the attribute pool is a sync.Pool). A File may be used by concurrent calls on
// its handle.
//
// Measure: `go test -run '^$' -bench . -benchmem ./libservices/access` (a
// checked stat and read against the same calls on the stack), and the direct
// path's cost with `go test -run '^$' -bench 'Direct(Stat|Read4K)' ./service`.
package access
