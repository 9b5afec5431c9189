//go:build !purego

package dtype

import (
	"encoding/binary"

	"golang.org/x/sys/cpu"
)

// q8Batch is how many blocks one call into assembly covers: the per-block scales live
// in arrays of this size on the stack.
const q8Batch = 64

var haveQ8Asm = cpu.X86.HasAVX2

//go:noescape
func decodeQ8_0AVX2(dst *float32, src *byte, scales *float32, blocks int)

//go:noescape
func absMaxQ8_0AVX2(src *float32, amax *float32, bad *uint8, blocks int)

//go:noescape
func quantQ8_0AVX2(dst *byte, src *float32, ids *float32, bad *uint8, blocks int)

// decodeQ8_0 dequantizes Q8_0 blocks, with AVX2 where the CPU has it. The scales are
// converted from fp16 in Go (one per 32 elements), so that they are exactly
// F16ToFloat32's; the assembly does float32(int8(q))·d, as the Go loop does.
func decodeQ8_0(dst []float32, src []byte) {
	blocks := min(len(src)/34, len(dst)/32)
	if !haveQ8Asm {
		decodeQ8_0Go(dst, src)
		return
	}
	var scales [q8Batch]float32
	for b := 0; b < blocks; b += q8Batch {
		nb := min(q8Batch, blocks-b)
		s := src[34*b:]
		for i := range nb {
			scales[i] = F16ToFloat32(binary.LittleEndian.Uint16(s[34*i:]))
		}
		decodeQ8_0AVX2(&dst[32*b], &s[0], &scales[0], nb)
	}
}

// encodeQ8_0 quantizes Q8_0 blocks, with AVX2 where the CPU has it: the assembly finds
// each block's largest magnitude, Go computes d, 1/d and the fp16 scale exactly as
// encodeQ8_0Go does, and the assembly rounds x·(1/d) half away from zero. A block
// holding a NaN, or whose scaled values reach ±127.5 (infinities, or a subnormal d
// whose inverse overflows), is redone by encodeQ8_0Go, so every block gets the
// reference's bytes.
func encodeQ8_0(dst []byte, src []float32) {
	blocks := min(len(src)/32, len(dst)/34)
	if !haveQ8Asm {
		encodeQ8_0Go(dst, src)
		return
	}
	var amax, ids [q8Batch]float32
	var bad [q8Batch]uint8
	for b := 0; b < blocks; b += q8Batch {
		nb := min(q8Batch, blocks-b)
		x, y := src[32*b:], dst[34*b:]
		absMaxQ8_0AVX2(&x[0], &amax[0], &bad[0], nb)
		for i := range nb {
			d := amax[i] / 127
			ids[i] = inverse(d)
			binary.LittleEndian.PutUint16(y[34*i:], Float32ToF16(d))
		}
		quantQ8_0AVX2(&y[0], &x[0], &ids[0], &bad[0], nb)
		for i := range nb {
			if bad[i] != 0 {
				encodeQ8_0Go(y[34*i:34*i+34], x[32*i:32*i+32])
			}
		}
	}
}
