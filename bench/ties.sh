#!/usr/bin/env bash
# Times `gomerge ties` (base + 3 models, density 0.2) against the I/O floor for the same
# bytes (bench/floor over the four inputs: reads all four, writes and fsyncs one model's
# worth, as TIES does) and the PyTorch peer (bench/peer/peer_torch.py), in one run, on
# ~1 GB BF16 llama-shaped checkpoints. Warm cache: the inputs are read once before each
# timed run. TORCH=0 skips the peer (about 200 s here).
#
#   bench/ties.sh [WORKDIR]        (default /tmp/gomerge-bench)
set -euo pipefail
WORK=${1:-/tmp/gomerge-bench}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel)
PY=${PYTHON:-/usr/bin/python3}
mkdir -p "$WORK/out"
FIX=$WORK/ties-1gb
(cd "$REPO" && go build -o "$WORK/gomerge" ./cmd/gomerge && go build -o "$WORK/floor" ./bench/floor)
if [[ ! -f $FIX/model3.safetensors ]]; then
	(cd "$REPO" && go run ./testdata/gen -out "$FIX" -config 1gb -shards 0 -fisher=false -models 3)
fi
B=$FIX/anchor.safetensors M1=$FIX/model1.safetensors M2=$FIX/model2.safetensors M3=$FIX/model3.safetensors
warm() { cat "$B" "$M1" "$M2" "$M3" >/dev/null; }
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "scale=3; ($t1 - $t0) / 1000000000" | bc; }
warm; "$WORK/floor" "$B" "$M1" "$M2" "$M3" "$WORK/out/f" && rm -f "$WORK/out/f" # untimed warm-up
for r in 1 2 3; do
	warm; f=$(secs "$WORK/floor" "$B" "$M1" "$M2" "$M3" "$WORK/out/f"); rm -f "$WORK/out/f"
	warm; g=$(secs "$WORK/gomerge" ties --base "$B" "$M1" "$M2" "$M3" --density 0.2 --out "$WORK/out/g.safetensors")
	echo "round $r: floor $f s, gomerge ties $g s, ratio $(echo "scale=2; $g / $f" | bc)"
	[[ $r == 3 ]] || rm -f "$WORK/out/g.safetensors"
done
if [[ ${TORCH:-1} == 1 ]]; then
	warm; t=$(secs "$PY" "$REPO/bench/peer/peer_torch.py" ties "$WORK/out/t.safetensors" "$B" 0.2 "$M1" "$M2" "$M3")
	echo "torch ties: $t s"
	"$WORK/gomerge" distance "$WORK/out/g.safetensors" "$WORK/out/t.safetensors" --json | grep -E '"l2"|relative' | head -2
	rm -f "$WORK/out/t.safetensors"
fi
rm -f "$WORK/out/g.safetensors"
