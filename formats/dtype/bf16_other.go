//go:build !amd64 || purego

package dtype

func widenBF16(dst []float32, src []uint16) { widenBF16Go(dst, src) }

func narrowBF16(dst []uint16, src []float32) { narrowBF16Go(dst, src) }
