//go:build !amd64

package dtype

func widenBF16(dst []float32, src []uint16) { widenBF16Go(dst, src) }
