package wire

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/polytropon/polytropon/internal/testenv"
)

// layoutItem pairs a C expression with the Go value it must equal.
type layoutItem struct {
	c    string
	want int
}

func layoutTable() []layoutItem {
	item := func(c string, v int) layoutItem { return layoutItem{c, v} }
	desc := func(field string, off, size int) []layoutItem {
		return []layoutItem{
			item("offsetof(struct pt_desc, "+field+")", off),
			item("sizeof(((struct pt_desc *)0)->"+field+")", size),
		}
	}
	var t []layoutItem
	t = append(t, desc("version", OffVersion, SizeVersion)...)
	t = append(t, desc("op", OffOp, SizeOp)...)
	t = append(t, desc("flags", OffFlags, SizeFlags)...)
	t = append(t, desc("req_id", OffReqID, SizeReqID)...)
	t = append(t, desc("handle", OffHandle, SizeHandle)...)
	t = append(t, desc("offset", OffOffset, SizeOffset)...)
	t = append(t, desc("buf_off", OffBufOff, SizeBufOff)...)
	t = append(t, desc("length", OffLength, SizeLength)...)
	t = append(t, desc("aux", OffAux, SizeAux)...)
	t = append(t, desc("status", OffStatus, SizeStatus)...)
	t = append(t, desc("result", OffResult, SizeResult)...)
	t = append(t, desc("state", OffState, SizeState)...)
	t = append(t, desc("mode", OffMode, SizeMode)...)
	t = append(t,
		item("sizeof(struct pt_desc)", DescSize),
		item("_Alignof(struct pt_desc)", DescSize),
		item("PT_DESC_SIZE", DescSize),
		item("PT_WIRE_VERSION", Version),
		item("PT_STATE_FREE", StateFree),
		item("PT_STATE_SUBMITTED", StateSubmitted),
		item("PT_STATE_SLEEPING", StateSleeping),
		item("PT_STATE_DONE", StateDone),
		item("PT_PATH_MAX", PathMax),
		item("PT_MAX_IO", MaxIO),
		item("offsetof(struct pt_stat, ino)", StatOffIno),
		item("offsetof(struct pt_stat, size)", StatOffSize),
		item("offsetof(struct pt_stat, blocks)", StatOffBlocks),
		item("offsetof(struct pt_stat, mode)", StatOffMode),
		item("offsetof(struct pt_stat, nlink)", StatOffNlink),
		item("offsetof(struct pt_stat, uid)", StatOffUID),
		item("offsetof(struct pt_stat, gid)", StatOffGID),
		item("offsetof(struct pt_stat, blksize)", StatOffBlksize),
		item("offsetof(struct pt_stat, rdev)", StatOffRdev),
		item("offsetof(struct pt_stat, atime_sec)", StatOffAtimeSec),
		item("offsetof(struct pt_stat, mtime_sec)", StatOffMtimeSec),
		item("offsetof(struct pt_stat, ctime_sec)", StatOffCtimeSec),
		item("offsetof(struct pt_stat, atime_nsec)", StatOffAtimeNsec),
		item("offsetof(struct pt_stat, mtime_nsec)", StatOffMtimeNsec),
		item("offsetof(struct pt_stat, ctime_nsec)", StatOffCtimeNsec),
		item("sizeof(struct pt_stat)", StatSize),
		item("PT_STAT_SIZE", StatSize),
		item("offsetof(struct pt_statfs, type)", StatfsOffType),
		item("offsetof(struct pt_statfs, bsize)", StatfsOffBsize),
		item("offsetof(struct pt_statfs, blocks)", StatfsOffBlocks),
		item("offsetof(struct pt_statfs, bfree)", StatfsOffBfree),
		item("offsetof(struct pt_statfs, bavail)", StatfsOffBavail),
		item("offsetof(struct pt_statfs, files)", StatfsOffFiles),
		item("offsetof(struct pt_statfs, ffree)", StatfsOffFfree),
		item("offsetof(struct pt_statfs, namelen)", StatfsOffNamelen),
		item("offsetof(struct pt_statfs, frsize)", StatfsOffFrsize),
		item("sizeof(struct pt_statfs)", StatfsSize),
		item("PT_STATFS_SIZE", StatfsSize),
		item("offsetof(struct pt_setattr, uid)", SetattrOffUID),
		item("offsetof(struct pt_setattr, gid)", SetattrOffGID),
		item("offsetof(struct pt_setattr, atime_sec)", SetattrOffAtimeSec),
		item("offsetof(struct pt_setattr, mtime_sec)", SetattrOffMtimeSec),
		item("offsetof(struct pt_setattr, atime_nsec)", SetattrOffAtimeNsec),
		item("offsetof(struct pt_setattr, mtime_nsec)", SetattrOffMtimeNsec),
		item("sizeof(struct pt_setattr)", SetattrSize),
		item("PT_SETATTR_SIZE", SetattrSize),
		item("offsetof(struct pt_dirent, name_len)", DirentOffNameLen),
		item("offsetof(struct pt_dirent, type)", DirentOffType),
		item("offsetof(struct pt_dirent, ino_lo)", DirentOffIno),
		item("sizeof(struct pt_dirent)", DirentHeaderSize),
		item("PT_DIRENT_HEADER_SIZE", DirentHeaderSize),
		item("offsetof(struct pt_mount, name_len)", MountOffNameLen),
		item("offsetof(struct pt_mount, prefix_len)", MountOffPrefixLen),
		item("sizeof(struct pt_mount)", MountHeaderSize),
		item("PT_MOUNT_HEADER_SIZE", MountHeaderSize),
		item("PT_FSYNC_DATA", FsyncData),
		item("PT_XATTR_SIZE_ONLY", XattrSizeOnly),
		item("PT_XATTR_CREATE", XattrCreate),
		item("PT_XATTR_REPLACE", XattrReplace),
		item("PT_SETATTR_MASK", SetattrMask),
		item("PT_FALLOCATE_MASK", FallocateMask),
		item("PT_NAME_MAX", NameMax),
		item("PT_ARENA_MAGIC", ArenaMagic),
		item("offsetof(struct pt_arena_header, magic)", ArenaOffMagic),
		item("offsetof(struct pt_arena_header, version)", ArenaOffVersion),
		item("offsetof(struct pt_arena_header, num_desc)", ArenaOffNumDesc),
		item("offsetof(struct pt_arena_header, desc_off)", ArenaOffDescOff),
		item("offsetof(struct pt_arena_header, data_off)", ArenaOffDataOff),
		item("offsetof(struct pt_arena_header, slot_bytes)", ArenaOffSlotBytes),
		item("offsetof(struct pt_arena_header, size)", ArenaOffSize),
		item("offsetof(struct pt_arena_header, ring_off)", ArenaOffRingOff),
		item("offsetof(struct pt_arena_header, ring_cap)", ArenaOffRingCap),
		item("sizeof(struct pt_arena_header)", ArenaHeaderSize),
		item("PT_RING_ENTRY_SIZE", RingEntrySize),
		item("PT_RING_SEQ_SHIFT", RingSeqShift),
		item("PT_RING_INDEX_MASK", RingIndexMask),
		item("PT_RING_ENTRY(7, 5) == 0x700000005ull", 1),
		item("PT_RING_ENTRY(0xffffffffu, 0xfffu) == 0xffffffff00000fffull", 1),
		item("PT_STATUS_MAGIC", StatusMagic),
		item("PT_STATUS_PAGE_SIZE", StatusPageSize),
		item("offsetof(struct pt_status_page, magic)", StatusOffMagic),
		item("offsetof(struct pt_status_page, version)", StatusOffVersion),
		item("offsetof(struct pt_status_page, sleepers)", StatusOffSleepers),
		item("PT_HELLO_MAGIC", HelloMagic),
		item("PT_WELCOME_MAGIC", WelcomeMagic),
		item("offsetof(struct pt_hello, magic)", HelloOffMagic),
		item("offsetof(struct pt_hello, version)", HelloOffVersion),
		item("sizeof(struct pt_hello)", HelloSize),
		item("PT_HELLO_SIZE", HelloSize),
		item("offsetof(struct pt_welcome, magic)", WelcomeOffMagic),
		item("offsetof(struct pt_welcome, version)", WelcomeOffVersion),
		item("offsetof(struct pt_welcome, status)", WelcomeOffStatus),
		item("offsetof(struct pt_welcome, slot)", WelcomeOffSlot),
		item("offsetof(struct pt_welcome, gen)", WelcomeOffGen),
		item("offsetof(struct pt_welcome, ring_cap)", WelcomeOffRingCap),
		item("offsetof(struct pt_welcome, num_desc)", WelcomeOffNumDesc),
		item("offsetof(struct pt_welcome, slot_bytes)", WelcomeOffSlotBytes),
		item("offsetof(struct pt_welcome, status_size)", WelcomeOffStatusSize),
		item("offsetof(struct pt_welcome, arena_size)", WelcomeOffArenaSize),
		item("sizeof(struct pt_welcome)", WelcomeSize),
		item("PT_WELCOME_SIZE", WelcomeSize),
		item("PT_WELCOME_FD_STATUS", WelcomeFdStatus),
		item("PT_WELCOME_FD_ARENA", WelcomeFdArena),
		item("PT_WELCOME_FD_EVENT", WelcomeFdEvent),
		item("PT_WELCOME_FDS", WelcomeFds),
		item("PT_ARENA_HEADER_SIZE", ArenaHeaderSize),
	)
	for op := Op(0); op < opCount; op++ {
		t = append(t, item("PT_OP_"+strings.ToUpper(op.String()), int(op)))
	}
	return t
}

// TestCHeaderMatchesGo compiles a program against polytropon_wire.h with the system C
// compiler, runs it and compares every offset, size and constant with this package.
func TestCHeaderMatchesGo(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		testenv.SkipOrFail(t, "test needs a C compiler (cc): "+err.Error())
		return
	}
	hdr, err := filepath.Abs("polytropon_wire.h")
	if err != nil {
		t.Fatal(err)
	}
	table := layoutTable()
	var src bytes.Buffer
	fmt.Fprintf(&src, "#include <stdio.h>\n#include <stddef.h>\n#include %q\nint main(void) {\n", hdr)
	for i, it := range table {
		fmt.Fprintf(&src, "\tprintf(\"%d %%lld\\n\", (long long)(%s));\n", i, it.c)
	}
	src.WriteString("\treturn 0;\n}\n")
	dir := t.TempDir()
	cfile := filepath.Join(dir, "layout.c")
	if err := os.WriteFile(cfile, src.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "layout")
	if out, err := exec.Command(cc, "-std=c11", "-Wall", "-Werror", "-o", bin, cfile).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			t.Fatalf("bad line %q", sc.Text())
		}
		i, _ := strconv.Atoi(f[0])
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || i < 0 || i >= len(table) {
			t.Fatalf("bad line %q", sc.Text())
		}
		if int(v) != table[i].want {
			t.Errorf("C %s = %d, Go says %d", table[i].c, v, table[i].want)
		}
		seen++
	}
	if seen != len(table) {
		t.Fatalf("C program printed %d values, want %d", seen, len(table))
	}
}
