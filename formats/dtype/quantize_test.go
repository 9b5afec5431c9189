package dtype

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// The ref* functions transcribe ggml's quantize_row_*_ref loops line by line, one
// block at a time, so that the encoder (written for brevity, with shared branches) is
// checked against the reference's own shape. Each product x·id is rounded on its own
// (float32(...)), as in ggml's C and in the encoder: on arm64 Go would otherwise fuse
// it with the + 8.5 that follows into one FMA.

func refQ8_0(x []float32) []byte {
	amax := float32(0)
	for j := 0; j < 32; j++ {
		v := x[j]
		if !(amax > abs32(v)) { // MAX(amax, fabsf(v))
			amax = abs32(v)
		}
	}
	d := amax / ((1 << 7) - 1)
	var id float32
	if d != 0 {
		id = 1.0 / d
	}
	y := binary.LittleEndian.AppendUint16(nil, Float32ToF16(d))
	for j := 0; j < 32; j++ {
		x0 := x[j] * id
		y = append(y, byte(int8(math.Round(float64(x0)))))
	}
	return y
}

func refQ4_0(x []float32) []byte {
	amax, max := float32(0), float32(0)
	for j := 0; j < 32; j++ {
		v := x[j]
		if amax < abs32(v) {
			amax = abs32(v)
			max = v
		}
	}
	d := max / -8
	var id float32
	if d != 0 {
		id = 1.0 / d
	}
	y := binary.LittleEndian.AppendUint16(nil, Float32ToF16(d))
	for j := 0; j < 16; j++ {
		x0 := float32(x[0+j] * id)
		x1 := float32(x[16+j] * id)
		xi0 := min(15, int8(float32(x0+8.5)))
		xi1 := min(15, int8(float32(x1+8.5)))
		y = append(y, byte(xi0)|byte(xi1)<<4)
	}
	return y
}

func refQ4_1(x []float32) []byte {
	min_, max_ := float32(math.MaxFloat32), float32(-math.MaxFloat32)
	for j := 0; j < 32; j++ {
		v := x[j]
		if v < min_ {
			min_ = v
		}
		if v > max_ {
			max_ = v
		}
	}
	d := (max_ - min_) / ((1 << 4) - 1)
	var id float32
	if d != 0 {
		id = 1.0 / d
	}
	y := binary.LittleEndian.AppendUint16(nil, Float32ToF16(d))
	y = binary.LittleEndian.AppendUint16(y, Float32ToF16(min_))
	for j := 0; j < 16; j++ {
		x0 := float32((x[0+j] - min_) * id)
		x1 := float32((x[16+j] - min_) * id)
		xi0 := min(15, int8(float32(x0+0.5)))
		xi1 := min(15, int8(float32(x1+0.5)))
		y = append(y, byte(xi0)|byte(xi1)<<4)
	}
	return y
}

func refQ5_0(x []float32) []byte {
	amax, max := float32(0), float32(0)
	for j := 0; j < 32; j++ {
		v := x[j]
		if amax < abs32(v) {
			amax = abs32(v)
			max = v
		}
	}
	d := max / -16
	var id float32
	if d != 0 {
		id = 1.0 / d
	}
	var qh uint32
	qs := make([]byte, 16)
	for j := 0; j < 16; j++ {
		x0 := float32(x[0+j] * id)
		x1 := float32(x[16+j] * id)
		xi0 := uint8(min(31, int8(float32(x0+16.5))))
		xi1 := uint8(min(31, int8(float32(x1+16.5))))
		qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4)
		qh |= uint32((xi0&0x10)>>4) << (j + 0)
		qh |= uint32((xi1&0x10)>>4) << (j + 16)
	}
	y := binary.LittleEndian.AppendUint16(nil, Float32ToF16(d))
	y = binary.LittleEndian.AppendUint32(y, qh)
	return append(y, qs...)
}

func refQ5_1(x []float32) []byte {
	min_, max_ := float32(math.MaxFloat32), float32(-math.MaxFloat32)
	for j := 0; j < 32; j++ {
		v := x[j]
		if v < min_ {
			min_ = v
		}
		if v > max_ {
			max_ = v
		}
	}
	d := (max_ - min_) / ((1 << 5) - 1)
	var id float32
	if d != 0 {
		id = 1.0 / d
	}
	var qh uint32
	qs := make([]byte, 16)
	for j := 0; j < 16; j++ {
		x0 := float32((x[0+j] - min_) * id)
		x1 := float32((x[16+j] - min_) * id)
		xi0 := uint8(float32(x0 + 0.5))
		xi1 := uint8(float32(x1 + 0.5))
		qs[j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4)
		qh |= uint32((xi0&0x10)>>4) << (j + 0)
		qh |= uint32((xi1&0x10)>>4) << (j + 16)
	}
	y := binary.LittleEndian.AppendUint16(nil, Float32ToF16(d))
	y = binary.LittleEndian.AppendUint16(y, Float32ToF16(min_))
	y = binary.LittleEndian.AppendUint32(y, qh)
	return append(y, qs...)
}

var quantRefs = map[DType]func([]float32) []byte{
	Q8_0: refQ8_0, Q4_0: refQ4_0, Q4_1: refQ4_1, Q5_0: refQ5_0, Q5_1: refQ5_1,
}

// randomBlocks returns n blocks of 32 values with mixed scales, plus blocks that hit
// the edge cases: all zero, ties for the largest magnitude, constant blocks, exact
// halves, and values whose d is not an fp16 number.
func randomBlocks(rng *rand.Rand, n int) []float32 {
	var x []float32
	for range n {
		scale := float32(math.Pow(10, rng.Float64()*8-6))
		for range 32 {
			x = append(x, float32(rng.NormFloat64())*scale)
		}
	}
	block := func(f func(j int) float32) {
		for j := range 32 {
			x = append(x, f(j))
		}
	}
	block(func(int) float32 { return 0 })
	block(func(j int) float32 { return []float32{-3, 3}[j%2] })             // tie: the first (−3) counts
	block(func(j int) float32 { return []float32{3, -3}[j%2] })             // tie: the first (3) counts
	block(func(int) float32 { return 0.7 })                                 // constant: d = 0 for Q4_1
	block(func(j int) float32 { return float32(j) - 15.5 })                 // halves
	block(func(j int) float32 { return float32(j) / 127 })                  // d = 31/127/127 is not fp16
	block(func(j int) float32 { return float32(j%5) * 1e-30 })              // subnormal scales
	block(func(j int) float32 { return float32(j-16) * 3.4e36 })            // near the float32 top
	block(func(j int) float32 { return float32(math.Copysign(0, -1)) * 1 }) // −0
	return x
}

func TestQuantizeMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := randomBlocks(rng, 2000)
	for d, ref := range quantRefs {
		got := make([]byte, d.Bytes(int64(len(x))))
		if err := Encode(got, x, d); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		bb := int(d.Bytes(32))
		for b := 0; b < len(x)/32; b++ {
			want := ref(x[32*b : 32*b+32])
			if g := got[b*bb : (b+1)*bb]; !bytes.Equal(g, want) {
				t.Fatalf("%s block %d (%v):\n got %x\nwant %x", d, b, x[32*b:32*b+32], g, want)
			}
		}
	}
}

// Hand-worked blocks: what the format's definition says each byte must be.
func TestQuantizeHandWorked(t *testing.T) {
	le := binary.LittleEndian
	t.Run("Q8_0 rounds half away from zero", func(t *testing.T) {
		x := make([]float32, 32)
		x[0] = 127 // amax 127: d = 1, id = 1
		x[1], x[2], x[3], x[4] = 2.5, -2.5, 3.5, 0.49
		y := make([]byte, 34)
		if err := Encode(y, x, Q8_0); err != nil {
			t.Fatal(err)
		}
		if le.Uint16(y) != 0x3C00 {
			t.Errorf("d = %#04x, want 0x3C00 (1.0)", le.Uint16(y))
		}
		want := []int8{127, 3, -3, 4, 0}
		for j, w := range want {
			if int8(y[2+j]) != w {
				t.Errorf("q[%d] = %d, want %d", j, int8(y[2+j]), w)
			}
		}
	})
	t.Run("Q4_0 all zero stores d = -0", func(t *testing.T) {
		y := make([]byte, 18)
		if err := Encode(y, make([]float32, 32), Q4_0); err != nil {
			t.Fatal(err)
		}
		if le.Uint16(y) != 0x8000 {
			t.Errorf("d = %#04x, want 0x8000 (-0.0)", le.Uint16(y))
		}
		for j, q := range y[2:] {
			if q != 0x88 { // 0·0 + 8.5 truncates to 8 in both nibbles
				t.Errorf("qs[%d] = %#02x, want 0x88", j, q)
			}
		}
	})
	t.Run("Q4_0 signed max, truncation, nibble order", func(t *testing.T) {
		x := make([]float32, 32)
		x[0], x[1] = -8, 8 // first of largest magnitude is -8: d = -8/-8 = 1
		x[2], x[3] = 0.4, -0.6
		x[16], x[17] = 7.4, -7.6
		y := make([]byte, 18)
		if err := Encode(y, x, Q4_0); err != nil {
			t.Fatal(err)
		}
		if le.Uint16(y) != 0x3C00 {
			t.Errorf("d = %#04x, want 0x3C00", le.Uint16(y))
		}
		// element j in the low nibble of qs[j], element j+16 in the high nibble:
		// -8+8.5 → 0; 8+8.5 → 16 → clamped 15; 0.4+8.5 → 8; -0.6+8.5 → 7;
		// 7.4+8.5 → 15; -7.6+8.5 → 0.
		wantLow := []byte{0, 15, 8, 7}
		wantHigh := []byte{15, 0, 8, 8}
		for j := range wantLow {
			if lo, hi := y[2+j]&0xf, y[2+j]>>4; lo != wantLow[j] || hi != wantHigh[j] {
				t.Errorf("qs[%d] = %d|%d<<4, want %d|%d<<4", j, lo, hi, wantLow[j], wantHigh[j])
			}
		}
	})
	t.Run("Q5_1 min and high bits", func(t *testing.T) {
		x := make([]float32, 32)
		for j := range x {
			x[j] = float32(j) + 1 // min 1, max 32: d = 1, q = j
		}
		y := make([]byte, 24)
		if err := Encode(y, x, Q5_1); err != nil {
			t.Fatal(err)
		}
		if d, m := le.Uint16(y), le.Uint16(y[2:]); d != 0x3C00 || m != 0x3C00 {
			t.Errorf("d, m = %#04x, %#04x, want 1, 1", d, m)
		}
		if qh := le.Uint32(y[4:]); qh != 0xFFFF0000 { // q ≥ 16 exactly for elements 16..31
			t.Errorf("qh = %#08x, want 0xFFFF0000", qh)
		}
		for j, q := range y[8:] {
			if q != byte(j)|byte(j)<<4 {
				t.Errorf("qs[%d] = %#02x, want %#02x", j, q, byte(j)|byte(j)<<4)
			}
		}
	})
	t.Run("id comes from the float32 d", func(t *testing.T) {
		// amax = 1: d = 1/127 in float32, which fp16 rounds. With id = 1/d(float32),
		// 0.5·id = 63.5 (up to rounding) rounds away to 64; the check is that the
		// encoder agrees with the reference, which uses the float32 d.
		x := make([]float32, 32)
		x[0], x[1] = 1, 0.5
		y := make([]byte, 34)
		if err := Encode(y, x, Q8_0); err != nil {
			t.Fatal(err)
		}
		d := float32(1) / 127
		if want := int8(math.Round(float64(0.5 * (1 / d)))); int8(y[3]) != want {
			t.Errorf("q[1] = %d, want %d", int8(y[3]), want)
		}
	})
}

// TestQuantizeRoundTripError measures the relative RMSE ‖x − deq(q(x))‖ / ‖x‖ on
// Gaussian data and holds it near what the format's step size implies: uniform
// rounding error of a step s has RMS s/√12, with s = amax/127 (Q8_0), amax/8 (Q4_0),
// amax/16 (Q5_0), range/15 (Q4_1), range/31 (Q5_1). docs/numerics.md#quantizers quotes these numbers.
func TestQuantizeRoundTripError(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 1 << 16
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	// Measured (seed 3, 4): Q8_0 0.0054, Q4_0 0.0860, Q5_0 0.0428, Q4_1 0.0784, Q5_1 0.0379,
	// Q2_K 0.2970, Q3_K 0.1514, Q4_K 0.0714, Q5_K 0.0361, Q6_K 0.0178. The K-quants'
	// searched scales beat the step-size estimate, so their bounds are the measured
	// values ±12%.
	bounds := map[DType][2]float64{
		Q8_0: {0.004, 0.006}, Q4_0: {0.06, 0.09}, Q5_0: {0.03, 0.045}, Q4_1: {0.065, 0.095}, Q5_1: {0.03, 0.047},
		Q2_K: {0.26, 0.33}, Q3_K: {0.133, 0.17}, Q4_K: {0.063, 0.08}, Q5_K: {0.032, 0.0405}, Q6_K: {0.0157, 0.02},
		F16: {0, 3e-4}, BF16: {1e-3, 3e-3}, F32: {0, 0},
	}
	for d, b := range bounds {
		q := make([]byte, d.Bytes(n))
		if err := Encode(q, x, d); err != nil {
			t.Fatal(err)
		}
		back := make([]float32, n)
		if err := Decode(back, q, d); err != nil {
			t.Fatal(err)
		}
		var num, den float64
		for i := range x {
			e := float64(x[i]) - float64(back[i])
			num += e * e
			den += float64(x[i]) * float64(x[i])
		}
		rel := math.Sqrt(num / den)
		t.Logf("%s: relative RMSE %.4f", d, rel)
		if rel < b[0] || rel > b[1] {
			t.Errorf("%s: relative RMSE %.4f outside [%g, %g]", d, rel, b[0], b[1])
		}
	}
}

func TestBlockTypeLengths(t *testing.T) {
	x := make([]float32, 33)
	if err := Encode(make([]byte, 100), x, Q8_0); err == nil {
		t.Error("Encode took 33 elements of Q8_0 (not whole blocks)")
	}
	if err := Encode(make([]byte, 33), x[:32], Q8_0); err == nil {
		t.Error("Encode wrote a Q8_0 block into 33 bytes")
	}
	if err := Decode(x[:32], make([]byte, 33), Q8_0); err == nil {
		t.Error("Decode read a Q8_0 block from 33 bytes")
	}
	for _, d := range []DType{Q2_K, Q3_K, Q4_K, Q5_K, Q6_K} {
		if err := Encode(make([]byte, d.Bytes(256)-1), make([]float32, 256), d); err == nil {
			t.Errorf("Encode wrote a %s block into %d bytes", d, d.Bytes(256)-1)
		}
		if err := Encode(make([]byte, 1024), make([]float32, 255), d); err == nil {
			t.Errorf("Encode took 255 elements of %s", d)
		}
	}
	for _, s := range []string{"q8_0", "Q4_0", "q5_1", "q4_k", "Q6_K", "q2_K"} {
		if d, err := ParseFloat(s); err != nil || !d.IsBlock() {
			t.Errorf("ParseFloat(%q) = %v, %v", s, d, err)
		}
	}
	if _, err := Parse("Q8_0"); err == nil {
		t.Error("Parse (safetensors names) accepted Q8_0")
	}
	if Q8_0.Bytes(64) != 68 || Q4_K.Bytes(512) != 288 || BF16.Bytes(3) != 6 || Q8_0.Size() != 0 {
		t.Error("Bytes/Size disagree with the block table")
	}
}
