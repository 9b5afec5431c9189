package dtype

import (
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// half16 describes a 16-bit float format for the independent reference below, which
// works from the IEEE definition in float64 rather than from bit tricks.
type half16 struct {
	name     string
	expBits  uint
	manBits  uint
	toF32    func(uint16) float32
	fromF32  func(float32) uint16
	infBits  uint16
	quietBit uint16
}

var formats16 = []half16{
	{"BF16", 8, 7, BF16ToFloat32, Float32ToBF16, 0x7f80, 0x0040},
	{"F16", 5, 10, F16ToFloat32, Float32ToF16, 0x7c00, 0x0200},
}

// refValue is the value of bit pattern h by the IEEE formula, in float64.
func (f half16) refValue(h uint16) float64 {
	bias := int(1)<<(f.expBits-1) - 1
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>f.manBits) & (1<<f.expBits - 1)
	man := float64(h & (1<<f.manBits - 1))
	scale := math.Ldexp(1, int(f.manBits))
	switch {
	case exp == 1<<f.expBits-1 && man == 0:
		return math.Inf(int(sign))
	case exp == 1<<f.expBits-1:
		return math.NaN()
	case exp == 0:
		return sign * math.Ldexp(man/scale, 1-bias)
	}
	return sign * math.Ldexp(1+man/scale, exp-bias)
}

// TestDecodeExhaustive checks every one of the 65,536 patterns of each format against
// the IEEE formula, NaN payloads included.
func TestDecodeExhaustive(t *testing.T) {
	for _, f := range formats16 {
		for i := range 1 << 16 {
			h := uint16(i)
			got := f.toF32(h)
			want := f.refValue(h)
			if math.IsNaN(want) {
				if !math.IsNaN(float64(got)) {
					t.Fatalf("%s %#04x: got %v, want NaN", f.name, h, got)
				}
				gb := math.Float32bits(got)
				if gb>>31 != uint32(h>>15) {
					t.Fatalf("%s %#04x: NaN lost its sign", f.name, h)
				}
				payload := uint32(h) & (1<<f.manBits - 1)
				if gb&0x7fffff != payload<<(23-f.manBits) {
					t.Fatalf("%s %#04x: NaN payload %#x not kept", f.name, h, gb&0x7fffff)
				}
				continue
			}
			if float64(got) != want || math.Signbit(float64(got)) != math.Signbit(want) {
				t.Fatalf("%s %#04x: got %v, want %v", f.name, h, got, want)
			}
		}
	}
}

// refRound rounds x to the format by searching the sorted table of all non-negative
// finite values (Inf appended one ulp past the largest), ties to the even pattern.
type refRounder struct {
	f      half16
	values []float64 // ascending, index = bit pattern for non-negative patterns
}

func newRefRounder(f half16) *refRounder {
	r := &refRounder{f: f}
	for h := uint16(0); h < f.infBits; h++ {
		r.values = append(r.values, f.refValue(h))
	}
	last := r.values[len(r.values)-1]
	prev := r.values[len(r.values)-2]
	r.values = append(r.values, last+(last-prev)) // where Inf sits for rounding
	if !sort.Float64sAreSorted(r.values) {
		panic("reference table not sorted")
	}
	return r
}

func (r *refRounder) round(x float32) uint16 {
	v := float64(x)
	var sign uint16
	if math.Signbit(v) {
		sign = 0x8000
		v = -v
	}
	if math.IsInf(v, 1) || v >= r.values[len(r.values)-1] {
		return sign | r.f.infBits
	}
	i := sort.SearchFloat64s(r.values, v) // first index with values[i] >= v
	if r.values[i] == v {
		return sign | uint16(i)
	}
	lo, hi := i-1, i
	dlo, dhi := v-r.values[lo], r.values[hi]-v
	switch {
	case dlo < dhi:
		return sign | uint16(lo)
	case dhi < dlo:
		return sign | uint16(hi)
	case lo%2 == 0:
		return sign | uint16(lo)
	}
	return sign | uint16(hi)
}

// TestEncodeAgainstReference rounds every representable value, every midpoint between
// neighbours, one float32 ulp either side of each midpoint, both signs, and random
// float32 patterns, and compares with the table search.
func TestEncodeAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, f := range formats16 {
		ref := newRefRounder(f)
		var inputs []float32
		for i := 0; i+1 < len(ref.values); i++ {
			a, b := ref.values[i], ref.values[i+1]
			mid := float32((a + b) / 2) // exact: one more bit than the format has
			inputs = append(inputs, float32(a), mid,
				math.Nextafter32(mid, 0), math.Nextafter32(mid, float32(math.Inf(1))))
		}
		inputs = append(inputs, float32(math.Inf(1)), math.MaxFloat32, math.SmallestNonzeroFloat32)
		for range 200_000 {
			inputs = append(inputs, math.Float32frombits(rng.Uint32()))
		}
		checked := 0
		for _, x := range inputs {
			for _, v := range []float32{x, -x} {
				if v != v {
					continue // NaNs are checked below
				}
				got, want := f.fromF32(v), ref.round(v)
				if got != want {
					t.Fatalf("%s: round(%g = %#08x) = %#04x, want %#04x", f.name, v, math.Float32bits(v), got, want)
				}
				checked++
			}
		}
		t.Logf("%s: %d values checked", f.name, checked)
	}
}

func TestEncodeNaN(t *testing.T) {
	for _, f := range formats16 {
		for _, bits := range []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff, 0x7fa00000} {
			x := math.Float32frombits(bits)
			h := f.fromF32(x)
			back := f.toF32(h)
			if !math.IsNaN(float64(back)) {
				t.Errorf("%s: NaN %#08x became %#04x (%v)", f.name, bits, h, back)
			}
			if math.Signbit(float64(back)) != (bits>>31 == 1) {
				t.Errorf("%s: NaN %#08x lost its sign", f.name, bits)
			}
			if h&f.quietBit == 0 {
				t.Errorf("%s: NaN %#08x is not quiet: %#04x", f.name, bits, h)
			}
		}
	}
}

// TestRoundTrip: widening then narrowing returns every non-NaN pattern unchanged.
func TestRoundTrip(t *testing.T) {
	for _, f := range formats16 {
		for i := range 1 << 16 {
			h := uint16(i)
			x := f.toF32(h)
			if x != x {
				continue
			}
			if got := f.fromF32(x); got != h {
				t.Fatalf("%s: %#04x -> %v -> %#04x", f.name, h, x, got)
			}
		}
	}
}

func TestDecodeEncodeSlices(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	src := make([]float32, 1001)
	for i := range src {
		src[i] = float32(rng.NormFloat64() * 3)
	}
	src[0] = float32(math.NaN())
	for _, d := range []DType{BF16, F16, F32, F64} {
		buf := make([]byte, len(src)*d.Size())
		if err := Encode(buf, src, d); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, len(src))
		if err := Decode(got, buf, d); err != nil {
			t.Fatal(err)
		}
		for i, v := range src {
			var want float32
			switch d {
			case BF16:
				want = BF16ToFloat32(Float32ToBF16(v))
			case F16:
				want = F16ToFloat32(Float32ToF16(v))
			default:
				want = v
			}
			if math.Float32bits(got[i]) != math.Float32bits(want) && !(got[i] != got[i] && want != want) {
				t.Fatalf("%s[%d]: got %v want %v", d, i, got[i], want)
			}
		}
	}
	if err := Decode(make([]float32, 4), make([]byte, 7), BF16); err == nil {
		t.Error("Decode accepted a short source")
	}
	if err := Encode(make([]byte, 3), make([]float32, 2), F16); err == nil {
		t.Error("Encode accepted a short destination")
	}
	if err := Decode(make([]float32, 1), make([]byte, 4), I32); err == nil {
		t.Error("Decode accepted an integer type")
	}
}

func TestF64Decode(t *testing.T) {
	// 1 + 2⁻²⁴ is halfway between two float32 values: ties to even gives 1.
	buf := make([]byte, 16)
	putF64 := func(i int, v float64) {
		b := math.Float64bits(v)
		for k := range 8 {
			buf[8*i+k] = byte(b >> (8 * k))
		}
	}
	putF64(0, 1+math.Ldexp(1, -24))
	putF64(1, 1+3*math.Ldexp(1, -24))
	got := make([]float32, 2)
	if err := Decode(got, buf, F64); err != nil {
		t.Fatal(err)
	}
	if got[0] != 1 || float64(got[1]) != 1+math.Ldexp(1, -22) {
		t.Errorf("F64 rounding: got %v", got)
	}
}

func TestParse(t *testing.T) {
	for d := Bool; d <= F64; d++ {
		got, err := Parse(d.String())
		if err != nil || got != d {
			t.Errorf("Parse(%q) = %v, %v", d.String(), got, err)
		}
	}
	if _, err := Parse("F8_E4M3"); err == nil || !errors.Is(err, ErrUnsupported) {
		t.Errorf("F8_E4M3: %v", err)
	}
	if _, err := Parse("Q9"); err == nil || !errors.Is(err, ErrUnknown) {
		t.Errorf("Q9: %v", err)
	}
	for in, want := range map[string]DType{"bf16": BF16, "float16": F16, "F32": F32, "fp32": F32} {
		if got, err := ParseFloat(in); err != nil || got != want {
			t.Errorf("ParseFloat(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseFloat("i32"); err == nil {
		t.Error("ParseFloat accepted an integer type")
	}
}

func BenchmarkDecode(b *testing.B) {
	const n = 1 << 16
	for _, d := range []DType{BF16, F16, F32, Q8_0, Q4_0, Q4_K, Q6_K} {
		b.Run(d.String(), func(b *testing.B) {
			src := make([]byte, d.Bytes(n))
			for i := range src {
				src[i] = byte(i * 7)
			}
			dst := make([]float32, n)
			b.SetBytes(int64(len(src)))
			b.ReportAllocs()
			for b.Loop() {
				if err := Decode(dst, src, d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	const n = 1 << 16
	for _, d := range []DType{BF16, F16, F32, Q8_0, Q4_0, Q5_1} {
		b.Run(d.String(), func(b *testing.B) {
			src := make([]float32, n)
			for i := range src {
				src[i] = float32(i) * 1e-3
			}
			dst := make([]byte, d.Bytes(n))
			b.SetBytes(int64(len(dst)))
			b.ReportAllocs()
			for b.Loop() {
				if err := Encode(dst, src, d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestFastPathsMatchBytewise: the in-place fast paths give exactly what the byte-wise
// loops give, aligned and misaligned.
func TestFastPathsMatchBytewise(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 1000
	src := make([]float32, n)
	for i := range src {
		src[i] = math.Float32frombits(rng.Uint32())
	}
	for _, d := range []DType{BF16, F16, F32} {
		for _, shift := range []int{0, 1, 2, 3} {
			buf := make([]byte, n*d.Size()+shift)[shift:]
			if err := Encode(buf, src, d); err != nil {
				t.Fatal(err)
			}
			for i, v := range src {
				var want []byte
				switch d {
				case BF16, F16:
					h := Float32ToBF16(v)
					if d == F16 {
						h = Float32ToF16(v)
					}
					want = []byte{byte(h), byte(h >> 8)}
				default:
					b := math.Float32bits(v)
					want = []byte{byte(b), byte(b >> 8), byte(b >> 16), byte(b >> 24)}
				}
				if string(buf[i*d.Size():(i+1)*d.Size()]) != string(want) {
					t.Fatalf("%s shift %d: Encode[%d] = %x, want %x", d, shift, i, buf[i*d.Size():(i+1)*d.Size()], want)
				}
			}
			got := make([]float32, n)
			if err := Decode(got, buf, d); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				var want float32
				switch d {
				case BF16:
					want = BF16ToFloat32(uint16(buf[2*i]) | uint16(buf[2*i+1])<<8)
				case F16:
					want = F16ToFloat32(uint16(buf[2*i]) | uint16(buf[2*i+1])<<8)
				default:
					want = math.Float32frombits(uint32(buf[4*i]) | uint32(buf[4*i+1])<<8 | uint32(buf[4*i+2])<<16 | uint32(buf[4*i+3])<<24)
				}
				if math.Float32bits(got[i]) != math.Float32bits(want) {
					t.Fatalf("%s shift %d: Decode[%d] = %x, want %x", d, shift, i, math.Float32bits(got[i]), math.Float32bits(want))
				}
			}
		}
	}
}

// TestWidenBF16MatchesGo: the widening used by Decode (AVX2 where present) equals the
// Go loop on every BF16 pattern, at lengths with and without a tail.
func TestWidenBF16MatchesGo(t *testing.T) {
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	for _, n := range []int{0, 1, 15, 16, 17, 1000, 1 << 16} {
		got, want := make([]float32, n), make([]float32, n)
		widenBF16(got, src[:n])
		widenBF16Go(want, src[:n])
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n=%d [%d]: %#x, want %#x", n, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
			}
		}
	}
}

// TestNarrowBF16MatchesGo: the rounding used by Encode (AVX2 where present) equals
// Float32ToBF16 on random patterns (NaN, Inf, subnormals, ties), with and without a tail.
func TestNarrowBF16MatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 16))
	src := make([]float32, 1<<16+5)
	for i := range src {
		src[i] = math.Float32frombits(rng.Uint32())
		if i%3 == 0 {
			src[i] = math.Float32frombits(rng.Uint32()&0xffff0000 | 0x8000) // an exact tie
		}
	}
	for _, n := range []int{0, 7, 8, 9, len(src)} {
		got, want := make([]uint16, n), make([]uint16, n)
		narrowBF16(got, src[:n])
		narrowBF16Go(want, src[:n])
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("n=%d [%d] %#08x: %#04x, want %#04x", n, i, math.Float32bits(src[i]), got[i], want[i])
			}
		}
	}
}
