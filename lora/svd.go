package lora

import (
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
)

// truncated is a rank-k factorization D ≈ U·diag(S)·Vᵀ.
type truncated struct {
	U, V *mat.Dense // rows×k, cols×k
	S    []float64  // descending
}

// svdOversample and svdPowerIters tune the randomized SVD (Halko, Martinsson and
// Tropp, 2011, algorithms 4.4 and 5.1): k+10 probe vectors and two power iterations
// give singular values within a few parts in a thousand of the exact ones for the
// slowly decaying spectra of fine-tuning deltas.
const (
	svdOversample = 10
	svdPowerIters = 2
)

// exactSVDBelow is the smaller dimension under which the exact thin SVD is used: it
// costs O(m·n·min(m,n)), which the randomized one beats only on larger matrices.
const exactSVDBelow = 512

// truncatedSVD returns D's leading k singular triplets, exactly (gonum's thin SVD)
// when the smaller dimension is under exactBelow, else by a randomized range finder
// seeded from seed, so that the same inputs always give the same factors.
func truncatedSVD(D *mat.Dense, k int, exactBelow int, seed uint64) (*truncated, error) {
	m, n := D.Dims()
	k = min(k, m, n)
	if min(m, n) < exactBelow || k+svdOversample >= min(m, n) {
		return exactSVD(D, k)
	}
	l := k + svdOversample
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	omega := mat.NewDense(n, l, nil)
	for i := range n {
		for j := range l {
			omega.Set(i, j, rng.NormFloat64())
		}
	}
	var Y mat.Dense
	Y.Mul(D, omega) // m×l
	Q := orthonormal(&Y)
	for range svdPowerIters {
		var Z mat.Dense
		Z.Mul(D.T(), Q) // n×l
		Qz := orthonormal(&Z)
		Y.Reset()
		Y.Mul(D, Qz)
		Q = orthonormal(&Y)
	}
	var B mat.Dense
	B.Mul(Q.T(), D) // l×n
	small, err := exactSVD(&B, k)
	if err != nil {
		return nil, err
	}
	var U mat.Dense
	U.Mul(Q, small.U) // m×k
	return &truncated{U: &U, V: small.V, S: small.S}, nil
}

// orthonormal returns the thin Q (m×l) of Y's QR factorization through LAPACK's
// Geqrf and Orgqr: mat.QR's QTo builds the full m×m Q, which for a 32000-row lm_head
// is 8 GB.
func orthonormal(Y *mat.Dense) *mat.Dense {
	a := mat.DenseCopyOf(Y).RawMatrix()
	tau := make([]float64, min(a.Rows, a.Cols))
	work := make([]float64, 1)
	lapack64.Geqrf(a, tau, work, -1)
	work = make([]float64, max(int(work[0]), a.Cols))
	lapack64.Geqrf(a, tau, work, len(work))
	lapack64.Orgqr(a, tau, work, -1)
	if n := int(work[0]); n > len(work) {
		work = make([]float64, n)
	}
	lapack64.Orgqr(a, tau, work, len(work))
	return mat.NewDense(a.Rows, a.Cols, a.Data)
}

func exactSVD(D *mat.Dense, k int) (*truncated, error) {
	var svd mat.SVD
	if !svd.Factorize(D, mat.SVDThin) {
		return nil, fmt.Errorf("SVD did not converge")
	}
	var U, V mat.Dense
	svd.UTo(&U)
	svd.VTo(&V)
	s := svd.Values(nil)
	m, _ := U.Dims()
	n, _ := V.Dims()
	return &truncated{U: mat.DenseCopyOf(U.Slice(0, m, 0, k)), V: mat.DenseCopyOf(V.Slice(0, n, 0, k)), S: s[:k]}, nil
}

// frob2 is the squared Frobenius norm.
func frob2(D *mat.Dense) float64 { return sumSquares(D.RawMatrix().Data) }

// sumSquares is Σ x², and sqDist Σ (a − b)²: energies and residuals that are
// reported, never written. Not inlined, so that .ci/fma-arm64 finds the
// multiply-adds arm64 fuses here under these names, apart from the functions that
// write factors, where a fusion would change the output.
//
//go:noinline
func sumSquares(xs []float64) float64 {
	var s float64
	for _, v := range xs {
		s += v * v
	}
	return s
}

//go:noinline
func sqDist(a, b []float64) float64 {
	var s float64
	for i, v := range a {
		s += (v - b[i]) * (v - b[i])
	}
	return s
}

func sqrtNonNeg(x float64) float64 { return math.Sqrt(max(x, 0)) }
