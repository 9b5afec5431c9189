#!/usr/bin/env bash
# Times gomerge's K-quant encoders (bench/kquant) against ggml's own reference
# quantizers (quantize_row_q4_K_ref and quantize_row_q6_K_ref in the libggml-base.so
# that node-llama-cpp ships, called through Python's ctypes as the bit-exactness test
# does) on the same 2^20 N(0,1) floats, thread CPU time per element, interleaved
# gomerge, ggml, gomerge, ggml, ... in one run. Each line ends with the first bytes of
# the output's SHA-256: gomerge's and ggml's must be equal (the script checks).
#
#   bench/kquant_peer.sh [ROUNDS]      (default 3; needs testdata/node's npm install)
set -euo pipefail
ROUNDS=${1:-3}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel)
cd "$REPO"
arch=$(uname -m | sed 's/x86_64/x64/; s/aarch64/arm64/')
LIB=$REPO/testdata/node/node_modules/@node-llama-cpp/linux-$arch/bins/linux-$arch/libggml-base.so
[[ -f $LIB ]] || { echo "no $LIB (cd testdata/node && npm install --omit=optional)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/kquant-peer.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
go build -o "$WORK/kquant" bench/kquant/main.go
"$WORK/kquant" -types q4_k,q6_k -data "$WORK/x.f32" >/dev/null # writes the input
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
	"$WORK/kquant" -types q4_k,q6_k | grep -v importance | sed "s/^/round $r gomerge /" | tee -a "$WORK/go"
	python3 bench/kquant/ggml_time.py "$LIB" "$WORK/x.f32" q4_K q6_K | sed "s/^/round $r ggml    /" | tee -a "$WORK/ggml"
done
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
for t in Q4_K Q6_K; do
	g=$(grep " $t " "$WORK/go" | awk '{print $NF}' | sort -u)
	c=$(grep " $t " "$WORK/ggml" | awk '{print $NF}' | sort -u)
	[[ $g == "$c" ]] || { echo "$t: gomerge's bytes ($g) differ from ggml's ($c)" >&2; exit 1; }
	go_med=$(grep " $t " "$WORK/go" | awk '{print $6}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
	gg_med=$(grep " $t " "$WORK/ggml" | awk '{print $6}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
	echo "$t encode median: gomerge $go_med ns/elem, ggml reference $gg_med ns/elem, ggml/gomerge $(echo "scale=2; $gg_med / $go_med" | bc), same bytes"
done
