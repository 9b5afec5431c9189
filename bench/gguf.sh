#!/usr/bin/env bash
# Times `gomerge sfa` on two ~1 GB Q8_0 GGUF files (llama shapes, F32 norms) against the
# I/O floor for the same bytes (bench/floor: map both inputs, write an output of the
# same size with pwrite, fsync), interleaved in one run, warm cache (the inputs are read
# once before each timed run). gomerge dequantizes both inputs, lerps in float32 and
# re-quantizes with ggml's reference Q8_0 quantizer.
#
#   bench/gguf.sh [WORKDIR] [ROUNDS]       (defaults /tmp/gomerge-bench, 5)
set -euo pipefail
WORK=${1:-/tmp/gomerge-bench}
ROUNDS=${2:-5}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel)
mkdir -p "$WORK/out"
FIX=$WORK/gguf-1gb
(cd "$REPO" && go build -o "$WORK/gomerge" ./cmd/gomerge && go build -o "$WORK/floor" ./bench/floor)
if [[ ! -f $FIX/current.gguf ]]; then
	(cd "$REPO" && go run ./testdata/gen -format gguf -config 1gb -out "$FIX")
fi
A=$FIX/anchor.gguf C=$FIX/current.gguf
warm() { cat "$A" "$C" >/dev/null; }
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "scale=3; ($t1 - $t0) / 1000000000" | bc; }
ls -l "$A" "$C"
warm; "$WORK/floor" "$A" "$C" "$WORK/out/f" && rm -f "$WORK/out/f" # untimed warm-up
for r in $(seq "$ROUNDS"); do
	warm; f=$(secs "$WORK/floor" "$A" "$C" "$WORK/out/f"); rm -f "$WORK/out/f"
	warm; g=$(secs "$WORK/gomerge" sfa --anchor "$A" --current "$C" --beta 0.5 --out "$WORK/out/g.gguf")
	echo "round $r: floor $f s, gomerge sfa Q8_0 $g s, ratio $(echo "scale=2; $g / $f" | bc)"
	rm -f "$WORK/out/g.gguf"
done
