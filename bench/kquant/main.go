//go:build ignore && linux

// Command kquant measures the thread CPU time per element of encoding and decoding
// N(0,1) data as Q8_0, Q4_K, Q5_K and Q6_K (and with an importance matrix); run it plain (vectorized fits where the
// CPU has them) and with -tags purego (the reference loops) to compare, interleaved:
//
//	go run bench/kquant/main.go; go run -tags purego bench/kquant/main.go
//
// Thread CPU time rather than wall time, so that other jobs on the machine matter less.
//
// With -data FILE it also writes its input (little-endian float32) there, and with
// -types it times only the listed types: bench/kquant_peer.sh uses both to time ggml's
// own reference quantizers on the same floats, side by side.
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gomerge/gomerge/formats/dtype"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(1, &ru) // RUSAGE_THREAD
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	data := flag.String("data", "", "also write the input floats (little-endian float32) to this file")
	types := flag.String("types", "q8_0,q4_k,q5_k,q6_k", "the types to time, comma-separated")
	flag.Parse()
	runtime.LockOSThread()
	const n = 1 << 20
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(rng.NormFloat64())
	}
	if *data != "" {
		raw := make([]byte, 4*n)
		for i, v := range src {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
		}
		if err := os.WriteFile(*data, raw, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	want := strings.Split(strings.ToLower(*types), ",")
	back := make([]float32, n)
	for _, d := range []dtype.DType{dtype.Q8_0, dtype.Q4_K, dtype.Q5_K, dtype.Q6_K} {
		if !slices.Contains(want, strings.ToLower(d.String())) {
			continue
		}
		dst := make([]byte, d.Bytes(n))
		t0 := cpu()
		for range 3 {
			dtype.Encode(dst, src, d)
		}
		te := (cpu() - t0) / 3
		t0 = cpu()
		for range 10 {
			dtype.Decode(back, dst, d)
		}
		td := (cpu() - t0) / 10
		sum := sha256.Sum256(dst)
		fmt.Printf("%s encode %.2f ns/elem, decode %.2f ns/elem (thread CPU time) sha256 %x\n", d, float64(te)/n, float64(td)/n, sum[:8])
		if dtype.ImportanceTypes(d) {
			qw := make([]float32, 4096) // rows of 4,096 columns, importance spread over decades
			for i := range qw {
				qw[i] = float32(math.Exp(2 * rng.NormFloat64()))
			}
			t0 = cpu()
			for range 3 {
				dtype.EncodeImportance(dst, src, d, qw, 0)
			}
			fmt.Printf("%s encode with an importance matrix %.2f ns/elem (thread CPU time)\n", d, float64((cpu()-t0)/3)/n)
		}
	}
}
