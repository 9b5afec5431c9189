#!/usr/bin/env bash
# Times `gomerge sfa` on two ~0.9 GB Q4_K_M GGUF files (llama shapes, 35 layers of
# TinyLlama widths) writing Q4_K_M (the inputs' mix, no --dtype), against the I/O
# floor for the same bytes (bench/floor), interleaved in one run, warm cache. The
# inputs are made once: testdata/gen writes Q8_0 files, gomerge requantizes each to
# Q4_K_M (`gomerge linear X --dtype q4_k_m`), the Q8_0 files are deleted. Prints wall
# and user CPU seconds and the load average per round.
#
#   bench/gguf_kquant.sh [WORKDIR] [ROUNDS]       (defaults /tmp/gomerge-bench, 3)
set -euo pipefail
WORK=${1:-/tmp/gomerge-bench}
ROUNDS=${2:-3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel)
mkdir -p "$WORK/out"
FIX=$WORK/gguf-q4km
(cd "$REPO" && go build -o "$WORK/gomerge" ./cmd/gomerge && go build -o "$WORK/floor" ./bench/floor)
if [[ ! -f $FIX/current.gguf ]]; then
	(cd "$REPO" && go run ./testdata/gen -format gguf -config 1gbk -out "$FIX/q8")
	for m in anchor current; do
		"$WORK/gomerge" linear "$FIX/q8/$m.gguf" --dtype q4_k_m --out "$FIX/$m.gguf"
	done
	rm -rf "$FIX/q8"
fi
A=$FIX/anchor.gguf C=$FIX/current.gguf
warm() { cat "$A" "$C" >/dev/null; }
# timed CMD...: "WALL USER" in seconds.
timed() { /usr/bin/time -f "%e %U" -o "$WORK/out/time" "$@" >/dev/null && cat "$WORK/out/time"; }
ls -l "$A" "$C"
warm; "$WORK/floor" "$A" "$C" "$WORK/out/f" && rm -f "$WORK/out/f" # untimed warm-up
for r in $(seq "$ROUNDS"); do
	warm; read -r fw fu < <(timed "$WORK/floor" "$A" "$C" "$WORK/out/f"); rm -f "$WORK/out/f"
	warm; read -r gw gu < <(timed "$WORK/gomerge" sfa --anchor "$A" --current "$C" --beta 0.5 --out "$WORK/out/g.gguf")
	echo "round $r: floor $fw s (user $fu s), gomerge sfa Q4_K_M $gw s (user $gu s), ratio $(echo "scale=2; $gw / $fw" | bc), load $(cut -d' ' -f1 /proc/loadavg)"
	rm -f "$WORK/out/g.gguf"
done
