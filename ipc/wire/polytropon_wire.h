/*
 * polytropon_wire.h: the direct path's descriptor layout for C clients.
 *
 * This header mirrors the Go package github.com/polytropon/polytropon/ipc/wire
 * (see its package doc for the diagram and the State protocol). A test in that
 * package compiles a program against this header with the system C compiler and
 * checks every offset, size and constant against the Go definitions: change both
 * together. All fields are little-endian; descriptors are 64-byte aligned.
 */
#ifndef POLYTROPON_WIRE_H
#define POLYTROPON_WIRE_H

#include <stdint.h>

#define PT_WIRE_VERSION 3
#define PT_DESC_SIZE 64

enum pt_op {
	PT_OP_INVALID = 0,
	PT_OP_NOP = 1,
	PT_OP_STAT = 2,
	PT_OP_OPEN = 3,
	PT_OP_CREATE = 4,
	PT_OP_READ = 5,
	PT_OP_WRITE = 6,
	PT_OP_FSYNC = 7,
	PT_OP_CLOSE = 8,
	PT_OP_MKDIR = 9,
	PT_OP_UNLINK = 10,
	PT_OP_RMDIR = 11,
	PT_OP_RENAME = 12,
	PT_OP_READDIR = 13,
	PT_OP_TRUNCATE = 14,
	PT_OP_FSTAT = 15,
	PT_OP_LSTAT = 16,
	PT_OP_LINK = 17,
	PT_OP_SYMLINK = 18,
	PT_OP_READLINK = 19,
	PT_OP_SETATTR = 20,
	PT_OP_STATFS = 21,
	PT_OP_GETXATTR = 22,
	PT_OP_SETXATTR = 23,
	PT_OP_LISTXATTR = 24,
	PT_OP_REMOVEXATTR = 25,
	PT_OP_FALLOCATE = 26,
	PT_OP_LOCK = 27,
	PT_OP_MOUNTS = 28,
	PT_OP_STATUS = 29,
};

/* Flags of ops other than open (which takes the O_* flags). */
#define PT_FSYNC_DATA 1
#define PT_XATTR_SIZE_ONLY 1
#define PT_XATTR_CREATE 1
#define PT_XATTR_REPLACE 2
#define PT_SETATTR_MASK 0xff
#define PT_FALLOCATE_MASK 0x3
#define PT_NAME_MAX 255

/* The State word (futex). */
#define PT_STATE_FREE 0
#define PT_STATE_SUBMITTED 1
#define PT_STATE_SLEEPING 2
#define PT_STATE_DONE 3

#define PT_PATH_MAX 4096
#define PT_MAX_IO (1u << 20)

struct pt_desc {
	uint16_t version;
	uint16_t op;
	uint32_t flags;
	uint64_t req_id;
	uint64_t handle;
	uint64_t offset;
	uint32_t buf_off;
	uint32_t length;
	uint32_t aux;
	int32_t status;
	uint64_t result;
	uint32_t state; /* atomic; futex word */
	uint32_t mode;
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct pt_desc) == PT_DESC_SIZE, "pt_desc size");

struct pt_stat {
	uint64_t ino;
	int64_t size;
	int64_t blocks;
	uint32_t mode;
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
	int32_t blksize;
	uint32_t pad0;
	uint64_t rdev;
	int64_t atime_sec;
	int64_t mtime_sec;
	int64_t ctime_sec;
	uint32_t atime_nsec;
	uint32_t mtime_nsec;
	uint32_t ctime_nsec;
	uint32_t pad1;
};

#define PT_STAT_SIZE 96

struct pt_statfs {
	int64_t type;
	int64_t bsize;
	uint64_t blocks;
	uint64_t bfree;
	uint64_t bavail;
	uint64_t files;
	uint64_t ffree;
	int64_t namelen;
	int64_t frsize;
};

#define PT_STATFS_SIZE 72

/* At the start of PT_OP_SETATTR's buffer; the path follows. */
struct pt_setattr {
	uint32_t uid;
	uint32_t gid;
	int64_t atime_sec;
	int64_t mtime_sec;
	uint32_t atime_nsec;
	uint32_t mtime_nsec;
};

#define PT_SETATTR_SIZE 32

struct pt_dirent {
	uint16_t name_len;
	uint8_t type;
	uint8_t pad;
	uint32_t ino_lo; /* the inode number, split so that the header packs to 12 bytes */
	uint32_t ino_hi;
	/* name_len bytes of name follow, no terminating NUL */
};

#define PT_DIRENT_HEADER_SIZE 12

struct pt_mount {
	uint16_t name_len;
	uint16_t prefix_len;
	/* name_len bytes of instance name, then prefix_len bytes of mount prefix */
};

#define PT_MOUNT_HEADER_SIZE 4

#define PT_ARENA_MAGIC 0x504f4c59u

/*
 * At offset 0 of the client's arena. The arena is: header | submission ring
 * (ring_cap entries of PT_RING_ENTRY_SIZE bytes at ring_off) | descriptors (at
 * desc_off) | data area (at data_off).
 */
struct pt_arena_header {
	uint32_t magic;
	uint32_t version;
	uint32_t num_desc;
	uint32_t desc_off;
	uint32_t data_off;
	uint32_t slot_bytes;
	uint64_t size;
	uint32_t ring_off;
	uint32_t ring_cap;
	uint8_t reserved[24];
};

#define PT_ARENA_HEADER_SIZE 64

/*
 * Submission ring entry: (seq << 32) | descriptor index, where seq is the position
 * plus one (mod 2^32). Publish with one sequentially consistent store, then load
 * the status page's sleepers word (also sequentially consistent) and write 1 to the
 * eventfd only when it is not zero:
 *
 *   __atomic_store_n(&ring[p & (ring_cap - 1)], PT_RING_ENTRY(p + 1, idx), __ATOMIC_SEQ_CST);
 *   if (__atomic_load_n(&status->sleepers, __ATOMIC_SEQ_CST) != 0)
 *           eventfd_write(efd, 1);
 */
#define PT_RING_ENTRY_SIZE 8
#define PT_RING_SEQ_SHIFT 32
#define PT_RING_INDEX_MASK 0xffffffffu
#define PT_RING_ENTRY(seq, idx) \
	(((uint64_t)(uint32_t)(seq) << PT_RING_SEQ_SHIFT) | (uint64_t)(uint32_t)(idx))

/* The service's status page: read-only for clients (sealed F_SEAL_FUTURE_WRITE). */
#define PT_STATUS_MAGIC 0x50545354u
#define PT_STATUS_PAGE_SIZE 4096

struct pt_status_page {
	uint32_t magic;
	uint32_t version;
	uint8_t pad0[56];
	uint32_t sleepers; /* workers asleep in epoll_wait; atomic */
	uint8_t pad1[60];
};

/* Handshake messages over the SOCK_SEQPACKET socket. */
#define PT_HELLO_MAGIC 0x50544831u
#define PT_WELCOME_MAGIC 0x50545731u

struct pt_hello {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
};

#define PT_HELLO_SIZE 8

/* With status 0 the welcome carries PT_WELCOME_FDS fds (SCM_RIGHTS), in this order. */
#define PT_WELCOME_FD_STATUS 0 /* status page memfd: map PROT_READ only */
#define PT_WELCOME_FD_ARENA 1  /* the client's arena memfd */
#define PT_WELCOME_FD_EVENT 2  /* the client's eventfd */
#define PT_WELCOME_FDS 3

struct pt_welcome {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
	int32_t status; /* 0 or an errno */
	uint16_t slot;
	uint16_t gen;
	uint32_t ring_cap;
	uint32_t num_desc;
	uint32_t slot_bytes;
	uint32_t status_size;
	uint64_t arena_size;
};

#define PT_WELCOME_SIZE 40

#endif /* POLYTROPON_WIRE_H */
