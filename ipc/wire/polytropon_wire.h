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

#define PT_WIRE_VERSION 1
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
};

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
	uint64_t size;
	int64_t mtime_ns;
	uint32_t mode;
	uint32_t nlink;
	uint32_t uid;
	uint32_t gid;
};

#define PT_STAT_SIZE 40

struct pt_dirent {
	uint16_t name_len;
	uint8_t type;
	uint8_t pad;
	/* name_len bytes of name follow, no terminating NUL */
};

#define PT_DIRENT_HEADER_SIZE 4

#define PT_ARENA_MAGIC 0x504f4c59u

struct pt_arena_header {
	uint32_t magic;
	uint32_t version;
	uint32_t num_desc;
	uint32_t desc_off;
	uint32_t data_off;
	uint32_t slot_bytes;
	uint64_t size;
	uint8_t reserved[32];
};

#define PT_ARENA_HEADER_SIZE 64

#endif /* POLYTROPON_WIRE_H */
