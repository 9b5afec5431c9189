//go:build !amd64 || purego

package dtype

func kGroupFits(x []float32, w *[qkK]float32, L *[qkK]uint8, scales, mins *[8]float32, nmax int32, rmin, rdelta float32, nstep int32) {
	kGroupFitsGo(x, w, L, scales, mins, nmax, rmin, rdelta, nstep)
}

func q6GroupFits(x, qw []float32, L *[qkK]int8, scales *[16]float32) { q6FitsGo(x, qw, L, scales) }

// quantizeQ45KPair reports that there is no two-block fit here: Encode quantizes
// Q4_K and Q5_K blocks one by one.
func quantizeQ45KPair(y []byte, bb int, x []float32, nmax int32) bool { return false }

// q6Requantize reports that there is no vectorized Q6_K requantizer here.
func q6Requantize(x []float32, d *[16]float32, L *[qkK]int8) bool { return false }

// quantizeKImplPair reports that there is no two-block fit here: EncodeImportance
// quantizes Q4_K and Q5_K blocks one by one.
func quantizeKImplPair(y []byte, bb int, x, qw0, qw1 []float32, nmax int32) bool { return false }
