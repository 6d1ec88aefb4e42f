//go:build !purego

// Copy kernels for amd64. The contract (no overlap, len(dst) == len(src), any
// length and alignment) and the reasons for each variant are on the Go
// declarations in kernels_amd64.go and on Kernel in kernels.go.
//
// Register use in every kernel: DI = dst, SI = src, BX = bytes left,
// R10 = prefetch distance (NT kernels), R11/R12 = where the saved head and tail
// go. Only X/Y/Z0-Z9 are used, so nothing of the Go ABI's fixed registers
// (X15, R14) is touched; VZEROUPPER before every return after YMM/ZMM use
// avoids the SSE transition penalty in the caller.

#include "textflag.h"

// SMALL128 copies BX <= 128 bytes with at most four overlapping loads and
// stores per size band and returns; it falls through when BX > 128. Loading
// everything before storing anything is what makes the overlapping halves
// safe for any alignment.
#define SMALL128 \
	CMPQ    BX, $16 \
	JB      lt16 \
	CMPQ    BX, $32 \
	JBE     le32 \
	CMPQ    BX, $64 \
	JBE     le64 \
	CMPQ    BX, $128 \
	JBE     le128 \
	JMP     big \
lt16: \
	CMPQ    BX, $8 \
	JB      lt8 \
	MOVQ    (SI), AX \
	MOVQ    -8(SI)(BX*1), CX \
	MOVQ    AX, (DI) \
	MOVQ    CX, -8(DI)(BX*1) \
	RET \
lt8: \
	CMPQ    BX, $4 \
	JB      lt4 \
	MOVL    (SI), AX \
	MOVL    -4(SI)(BX*1), CX \
	MOVL    AX, (DI) \
	MOVL    CX, -4(DI)(BX*1) \
	RET \
lt4: \
	CMPQ    BX, $2 \
	JB      lt2 \
	MOVW    (SI), AX \
	MOVW    -2(SI)(BX*1), CX \
	MOVW    AX, (DI) \
	MOVW    CX, -2(DI)(BX*1) \
	RET \
lt2: \
	TESTQ   BX, BX \
	JEQ     ret0 \
	MOVB    (SI), AX \
	MOVB    AX, (DI) \
ret0: \
	RET \
le32: \
	MOVOU   (SI), X0 \
	MOVOU   -16(SI)(BX*1), X1 \
	MOVOU   X0, (DI) \
	MOVOU   X1, -16(DI)(BX*1) \
	RET \
le64: \
	VMOVDQU (SI), Y0 \
	VMOVDQU -32(SI)(BX*1), Y1 \
	VMOVDQU Y0, (DI) \
	VMOVDQU Y1, -32(DI)(BX*1) \
	VZEROUPPER \
	RET \
le128: \
	VMOVDQU (SI), Y0 \
	VMOVDQU 32(SI), Y1 \
	VMOVDQU -64(SI)(BX*1), Y2 \
	VMOVDQU -32(SI)(BX*1), Y3 \
	VMOVDQU Y0, (DI) \
	VMOVDQU Y1, 32(DI) \
	VMOVDQU Y2, -64(DI)(BX*1) \
	VMOVDQU Y3, -32(DI)(BX*1) \
	VZEROUPPER \
	RET \
big:

// ALIGN_DST(a) advances DI to the next multiple of a strictly above DI (1..a
// bytes; the caller has saved at least a head bytes), moves SI along and takes
// the step off BX.
#define ALIGN_DST(a) \
	MOVQ    DI, CX \
	ADDQ    $a, CX \
	ANDQ    $-a, CX \
	SUBQ    DI, CX \
	ADDQ    CX, DI \
	ADDQ    CX, SI \
	SUBQ    CX, BX

// LOAD_TAIL128_Y saves the last 128 source bytes in Y6-Y9 and points R12 at
// the last 128 destination bytes; STORE_TAIL128_Y writes them back.
#define LOAD_TAIL128_Y \
	LEAQ    -128(SI)(BX*1), AX \
	VMOVDQU (AX), Y6 \
	VMOVDQU 32(AX), Y7 \
	VMOVDQU 64(AX), Y8 \
	VMOVDQU 96(AX), Y9 \
	LEAQ    -128(DI)(BX*1), R12

#define STORE_TAIL128_Y \
	VMOVDQU Y6, (R12) \
	VMOVDQU Y7, 32(R12) \
	VMOVDQU Y8, 64(R12) \
	VMOVDQU Y9, 96(R12)

// func copyAVX2(dst, src []byte)
TEXT ·copyAVX2(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ dst_len+8(FP), BX
	SMALL128

	// BX > 128: save a 32-byte head and the 128-byte tail, then copy the
	// middle with 32-byte aligned stores, 128 bytes per iteration.
	VMOVDQU (SI), Y4
	MOVQ    DI, R11
	LOAD_TAIL128_Y
	ALIGN_DST(32)

avx2loop:
	CMPQ    BX, $128
	JBE     avx2done
	VMOVDQU (SI), Y0
	VMOVDQU 32(SI), Y1
	VMOVDQU 64(SI), Y2
	VMOVDQU 96(SI), Y3
	VMOVDQA Y0, (DI)
	VMOVDQA Y1, 32(DI)
	VMOVDQA Y2, 64(DI)
	VMOVDQA Y3, 96(DI)
	ADDQ    $128, SI
	ADDQ    $128, DI
	SUBQ    $128, BX
	JMP     avx2loop

avx2done:
	STORE_TAIL128_Y
	VMOVDQU Y4, (R11)
	VZEROUPPER
	RET

// func copyAVX2NT2(dst, src []byte, dist int)
TEXT ·copyAVX2NT2(SB), NOSPLIT, $0-56
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ dst_len+8(FP), BX
	MOVQ dist+48(FP), R10
	SMALL128

	// BX > 128: save a 64-byte head and the 128-byte tail; align the
	// destination to a cache line so that every non-temporal store fills
	// whole lines, two lines per iteration (the SMO pipeline).
	VMOVDQU (SI), Y4
	VMOVDQU 32(SI), Y5
	MOVQ    DI, R11
	LOAD_TAIL128_Y
	ALIGN_DST(64)

nt2loop:
	CMPQ        BX, $128
	JBE         nt2done
	PREFETCHNTA (SI)(R10*1)
	PREFETCHNTA 64(SI)(R10*1)
	VMOVDQU     (SI), Y0
	VMOVDQU     32(SI), Y1
	VMOVDQU     64(SI), Y2
	VMOVDQU     96(SI), Y3
	VMOVNTDQ    Y0, (DI)
	VMOVNTDQ    Y1, 32(DI)
	VMOVNTDQ    Y2, 64(DI)
	VMOVNTDQ    Y3, 96(DI)
	ADDQ        $128, SI
	ADDQ        $128, DI
	SUBQ        $128, BX
	JMP         nt2loop

nt2done:
	// Non-temporal stores are weakly ordered: fence them before the
	// ordinary stores below and before the caller publishes the data.
	SFENCE
	STORE_TAIL128_Y
	VMOVDQU Y4, (R11)
	VMOVDQU Y5, 32(R11)
	VZEROUPPER
	RET

// func copyAVX2NT4(dst, src []byte, dist int)
TEXT ·copyAVX2NT4(SB), NOSPLIT, $0-56
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ dst_len+8(FP), BX
	MOVQ dist+48(FP), R10
	SMALL128

	VMOVDQU (SI), Y4
	VMOVDQU 32(SI), Y5
	MOVQ    DI, R11
	LOAD_TAIL128_Y
	ALIGN_DST(64)

	// Four lines (256 bytes) per iteration, then at most one two-line
	// step, then the saved tail.
nt4loop:
	CMPQ        BX, $256
	JBE         nt4rest
	PREFETCHNTA (SI)(R10*1)
	PREFETCHNTA 64(SI)(R10*1)
	PREFETCHNTA 128(SI)(R10*1)
	PREFETCHNTA 192(SI)(R10*1)
	VMOVDQU     (SI), Y0
	VMOVDQU     32(SI), Y1
	VMOVDQU     64(SI), Y2
	VMOVDQU     96(SI), Y3
	VMOVNTDQ    Y0, (DI)
	VMOVNTDQ    Y1, 32(DI)
	VMOVNTDQ    Y2, 64(DI)
	VMOVNTDQ    Y3, 96(DI)
	VMOVDQU     128(SI), Y0
	VMOVDQU     160(SI), Y1
	VMOVDQU     192(SI), Y2
	VMOVDQU     224(SI), Y3
	VMOVNTDQ    Y0, 128(DI)
	VMOVNTDQ    Y1, 160(DI)
	VMOVNTDQ    Y2, 192(DI)
	VMOVNTDQ    Y3, 224(DI)
	ADDQ        $256, SI
	ADDQ        $256, DI
	SUBQ        $256, BX
	JMP         nt4loop

nt4rest:
	CMPQ     BX, $128
	JBE      nt4done
	VMOVDQU  (SI), Y0
	VMOVDQU  32(SI), Y1
	VMOVDQU  64(SI), Y2
	VMOVDQU  96(SI), Y3
	VMOVNTDQ Y0, (DI)
	VMOVNTDQ Y1, 32(DI)
	VMOVNTDQ Y2, 64(DI)
	VMOVNTDQ Y3, 96(DI)

nt4done:
	SFENCE
	STORE_TAIL128_Y
	VMOVDQU Y4, (R11)
	VMOVDQU Y5, 32(R11)
	VZEROUPPER
	RET

// SMALL256_Z copies 128 < BX <= 256 bytes with two 64-byte vectors from each
// end and returns; it falls through when BX > 256.
#define SMALL256_Z \
	CMPQ      BX, $256 \
	JA        big512 \
	VMOVDQU64 (SI), Z0 \
	VMOVDQU64 64(SI), Z1 \
	VMOVDQU64 -128(SI)(BX*1), Z2 \
	VMOVDQU64 -64(SI)(BX*1), Z3 \
	VMOVDQU64 Z0, (DI) \
	VMOVDQU64 Z1, 64(DI) \
	VMOVDQU64 Z2, -128(DI)(BX*1) \
	VMOVDQU64 Z3, -64(DI)(BX*1) \
	VZEROUPPER \
	RET \
big512:

// LOAD_TAIL256_Z saves the last 256 source bytes in Z6-Z9 and points R12 at
// the last 256 destination bytes; STORE_TAIL256_Z writes them back.
#define LOAD_TAIL256_Z \
	LEAQ      -256(SI)(BX*1), AX \
	VMOVDQU64 (AX), Z6 \
	VMOVDQU64 64(AX), Z7 \
	VMOVDQU64 128(AX), Z8 \
	VMOVDQU64 192(AX), Z9 \
	LEAQ      -256(DI)(BX*1), R12

#define STORE_TAIL256_Z \
	VMOVDQU64 Z6, (R12) \
	VMOVDQU64 Z7, 64(R12) \
	VMOVDQU64 Z8, 128(R12) \
	VMOVDQU64 Z9, 192(R12)

// func copyAVX512(dst, src []byte)
TEXT ·copyAVX512(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ dst_len+8(FP), BX
	SMALL128
	SMALL256_Z

	// BX > 256: save a 64-byte head and the 256-byte tail, then 64-byte
	// aligned stores, 256 bytes per iteration.
	VMOVDQU64 (SI), Z4
	MOVQ      DI, R11
	LOAD_TAIL256_Z
	ALIGN_DST(64)

avx512loop:
	CMPQ      BX, $256
	JBE       avx512done
	VMOVDQU64 (SI), Z0
	VMOVDQU64 64(SI), Z1
	VMOVDQU64 128(SI), Z2
	VMOVDQU64 192(SI), Z3
	VMOVDQA64 Z0, (DI)
	VMOVDQA64 Z1, 64(DI)
	VMOVDQA64 Z2, 128(DI)
	VMOVDQA64 Z3, 192(DI)
	ADDQ      $256, SI
	ADDQ      $256, DI
	SUBQ      $256, BX
	JMP       avx512loop

avx512done:
	STORE_TAIL256_Z
	VMOVDQU64 Z4, (R11)
	VZEROUPPER
	RET

// func copyAVX512NT(dst, src []byte, dist int)
TEXT ·copyAVX512NT(SB), NOSPLIT, $0-56
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ dst_len+8(FP), BX
	MOVQ dist+48(FP), R10
	SMALL128
	SMALL256_Z

	VMOVDQU64 (SI), Z4
	MOVQ      DI, R11
	LOAD_TAIL256_Z
	ALIGN_DST(64)

avx512ntloop:
	CMPQ        BX, $256
	JBE         avx512ntdone
	PREFETCHNTA (SI)(R10*1)
	PREFETCHNTA 64(SI)(R10*1)
	PREFETCHNTA 128(SI)(R10*1)
	PREFETCHNTA 192(SI)(R10*1)
	VMOVDQU64   (SI), Z0
	VMOVDQU64   64(SI), Z1
	VMOVDQU64   128(SI), Z2
	VMOVDQU64   192(SI), Z3
	VMOVNTDQ    Z0, (DI)
	VMOVNTDQ    Z1, 64(DI)
	VMOVNTDQ    Z2, 128(DI)
	VMOVNTDQ    Z3, 192(DI)
	ADDQ        $256, SI
	ADDQ        $256, DI
	SUBQ        $256, BX
	JMP         avx512ntloop

avx512ntdone:
	SFENCE
	STORE_TAIL256_Z
	VMOVDQU64 Z4, (R11)
	VZEROUPPER
	RET

// func copyRepMovsb(dst, src []byte)
TEXT ·copyRepMovsb(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ dst_len+8(FP), CX
	// The Go ABI keeps the direction flag clear, so this copies upward.
	REP; MOVSB
	RET

// func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eaxArg+0(FP), AX
	MOVL ecxArg+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET
