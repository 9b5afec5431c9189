#!/usr/bin/env bash
# Times `gomerge lora extract --rank 16` on a ~1 GB BF16 llama-shaped pair (every
# attention and MLP matrix and lm_head; the embedding left out), then `gomerge lora
# apply` of that rank-16 adapter to the base against the I/O floor for the same bytes
# (bench/floor over base and adapter: reads both, writes and fsyncs one model's
# worth). Warm cache: the inputs are read once before each timed run.
#
#   bench/lora.sh [WORKDIR]     (default /tmp/gomerge-bench; FIX=DIR reuses a fixture;
#                                SKIP_EXTRACT=1 reuses the adapter of an earlier run)
set -euo pipefail
WORK=${1:-/tmp/gomerge-bench}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel)
FIX=${FIX:-$WORK/fixtures-1gb}
mkdir -p "$WORK/lora"
OUT=$WORK/lora
(cd "$REPO" && go build -o "$OUT/gomerge" ./cmd/gomerge && go build -o "$OUT/floor" ./bench/floor)
if [[ ! -f $FIX/current.safetensors ]]; then
	(cd "$REPO" && go run ./testdata/gen -out "$FIX" -config 1gb -shards 0 -fisher=false)
fi
B=$FIX/anchor.safetensors M=$FIX/current.safetensors
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "scale=3; ($t1 - $t0) / 1000000000" | bc; }
if [[ ${SKIP_EXTRACT:-0} != 1 || ! -d $OUT/adapter ]]; then
cat "$B" "$M" >/dev/null
/usr/bin/time -f "extract: %e s, max RSS %M KiB" "$OUT/gomerge" lora extract --base "$B" --model "$M" --rank 16 \
	--out "$OUT/adapter" --json >"$OUT/extract.json"
grep -c '"tensor"' "$OUT/extract.json" | sed 's/^/modules extracted: /'
fi
A=$OUT/adapter/adapter_model.safetensors
warm() { cat "$B" "$A" >/dev/null; }
warm; "$OUT/floor" "$B" "$A" "$OUT/f" && rm -f "$OUT/f" # untimed warm-up
for r in 1 2 3; do
	warm; f=$(secs "$OUT/floor" "$B" "$A" "$OUT/f"); rm -f "$OUT/f"
	warm; g=$(secs "$OUT/gomerge" lora apply --base "$B" "$OUT/adapter" --out "$OUT/applied.safetensors")
	echo "round $r: floor $f s, gomerge lora apply $g s, ratio $(echo "scale=2; $g / $f" | bc)"
done
warm; /usr/bin/time -f "apply: %e s, max RSS %M KiB" "$OUT/gomerge" lora apply --base "$B" "$OUT/adapter" --out "$OUT/applied.safetensors" >/dev/null
rm -f "$OUT/applied.safetensors"
