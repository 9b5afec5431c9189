//go:build !purego

package merge

//go:noescape
func gramDiffBF16AVX2(d *float64, y, b *byte, n int)

//go:noescape
func gramDiffBF16AVX512(d *float64, y, b *byte, n int)

//go:noescape
func gramDiffF32AVX2(d *float64, y, b *float32, n int)

//go:noescape
func dotLanesAVX2(s *[lanes]float64, a, c *float64, n int)

//go:noescape
func gram2LanesAVX2(s *[lanes]float64, d0, d1 *float64, n int)

//go:noescape
func gram3LanesAVX2(s *[lanes]float64, d0, d1, d2 *float64, n int)

// gramDiffBF16Asm runs gramDiffBF16AVX512 (where the CPU has it) or
// gramDiffBF16AVX2 over the largest multiple of 8 elements of d and returns it; the
// caller checks haveLerpBF16Asm (the CPU has AVX2).
func gramDiffBF16Asm(d []float64, y, b []byte) int {
	n := len(d) &^ 7
	if n == 0 {
		return 0
	}
	_ = y[2*n-1] // the assembly reads n words of y and b
	var bp *byte
	if b != nil {
		_ = b[2*n-1]
		bp = &b[0]
	}
	if haveAVX512BW {
		gramDiffBF16AVX512(&d[0], &y[0], bp, n)
	} else {
		gramDiffBF16AVX2(&d[0], &y[0], bp, n)
	}
	return n
}

// gramDiffF32Asm runs gramDiffF32AVX2 over the largest multiple of 8 elements of d
// and returns it; the caller checks haveLerpBF16Asm.
func gramDiffF32Asm(d []float64, y, b []float32) int {
	n := len(d) &^ 7
	if n == 0 {
		return 0
	}
	_ = y[n-1] // the assembly reads n values of y and b
	var bp *float32
	if b != nil {
		_ = b[n-1]
		bp = &b[0]
	}
	gramDiffF32AVX2(&d[0], &y[0], bp, n)
	return n
}

// gramLanesAsm is gramLanesGo over the rows' first n elements (a multiple of 8,
// at least 8) in assembly, by the pairs' layout, and returns n; the caller checks
// haveLerpBF16Asm.
func gramLanesAsm(ls [][lanes]float64, d []float64, pairs [][2]int, layout gramLayout, n int) int {
	row := func(i int) *float64 { return &d[i*gramStride:][:n][0] }
	switch layout {
	case gramThree:
		_ = ls[5]
		gram3LanesAVX2(&ls[0], row(0), row(1), row(2), n)
	case gramTwo:
		_ = ls[2]
		gram2LanesAVX2(&ls[0], row(0), row(1), n)
	default:
		for p, q := range pairs {
			dotLanesAVX2(&ls[p], row(q[0]), row(q[1]), n)
		}
	}
	return n
}

//go:noescape
func gramBF16AVX512(s *[lanes]float64, y0, y1, y2, b *byte, three bool, n int)

// gramWordsAsm adds the pairs' products of the first n&^7 elements of two or three
// vectors of BF16 words (y; b nil or the base's words) into ls, as gramDiffBF16 and
// gramLanesAsm do a block at a time, and returns how many elements it took: 0 unless
// the CPU has AVX-512 BW and layout is gramTwo or gramThree.
func gramWordsAsm(ls [][lanes]float64, y [][]byte, b []byte, layout gramLayout, n int) int {
	n &^= lanes - 1
	if !haveAVX512BW || n == 0 || layout != gramTwo && layout != gramThree {
		return 0
	}
	three := layout == gramThree
	if three {
		_ = ls[5]
	} else {
		_ = ls[2]
	}
	for _, yi := range y {
		_ = yi[2*n-1] // the assembly reads n words of each
	}
	var bp *byte
	if b != nil {
		_ = b[2*n-1]
		bp = &b[0]
	}
	y2 := &y[1][0]
	if three {
		y2 = &y[2][0]
	}
	gramBF16AVX512(&ls[0], &y[0][0], &y[1][0], y2, bp, three, n)
	return n
}
