//go:build !amd64 || purego

package dtype

func decodeQ8_0(dst []float32, src []byte) { decodeQ8_0Go(dst, src) }

func encodeQ8_0(dst []byte, src []float32) { encodeQ8_0Go(dst, src) }
