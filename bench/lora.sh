#!/usr/bin/env bash
# Times `gomerge lora extract --rank 16` on a ~1 GB BF16 llama-shaped pair (every
# attention and MLP matrix and lm_head; the embedding left out), then `gomerge lora
# apply` of that rank-16 adapter to the base against the I/O floor for the same bytes
# (bench/floor over base and adapter: reads both, writes and fsyncs one model's
# worth). Warm cache: the inputs are read once before each timed run.
#
#   bench/lora.sh [WORKDIR]     (default /tmp/gomerge-bench; FIX=DIR reuses a fixture;
#                                SKIP_EXTRACT=1 reuses the adapter of an earlier run;
#                                ROUNDS=N floor/apply pairs, default 5)
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
# run prints "wall cpu" seconds of a command: cpu (user + sys) moves less than wall on a
# shared machine, so both are reported.
run() { /usr/bin/time -f "%e %U %S" -o "$OUT/t" "$@" >/dev/null && awk '{printf "%.2f %.2f\n", $1, $2 + $3}' "$OUT/t"; }
if [[ ${SKIP_EXTRACT:-0} != 1 || ! -d $OUT/adapter ]]; then
cat "$B" "$M" >/dev/null
/usr/bin/time -f "extract: %e s, max RSS %M KiB" "$OUT/gomerge" lora extract --base "$B" --model "$M" --rank 16 \
	--out "$OUT/adapter" --json >"$OUT/extract.json"
grep -c '"tensor"' "$OUT/extract.json" | sed 's/^/modules extracted: /'
fi
A=$OUT/adapter/adapter_model.safetensors
warm() { cat "$B" "$A" >/dev/null; }
warm; "$OUT/floor" "$B" "$A" "$OUT/f" && rm -f "$OUT/f" # untimed warm-up
: >"$OUT/rounds"
for r in $(seq "${ROUNDS:-5}"); do
	warm; read -r fw fc < <(run "$OUT/floor" "$B" "$A" "$OUT/f"); rm -f "$OUT/f"
	warm; read -r gw gc < <(run "$OUT/gomerge" lora apply --base "$B" "$OUT/adapter" --out "$OUT/applied.safetensors")
	echo "$fw $gw $fc $gc" >>"$OUT/rounds"
	echo "round $r: floor $fw s (cpu $fc s), gomerge lora apply $gw s (cpu $gc s), wall ratio $(echo "scale=2; $gw / $fw" | bc), load $(cut -d' ' -f1 /proc/loadavg)"
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
awk '{print $2 / $1}' "$OUT/rounds" | median | sed 's/^/median wall ratio: /'
awk '{print $4 / $3}' "$OUT/rounds" | median | sed 's/^/median cpu ratio: /'
warm; /usr/bin/time -f "apply: %e s, max RSS %M KiB (the mapped base counts)" "$OUT/gomerge" lora apply --base "$B" "$OUT/adapter" --out "$OUT/applied.safetensors" >/dev/null
GODEBUG=gctrace=1 "$OUT/gomerge" lora apply --base "$B" "$OUT/adapter" --out "$OUT/applied.safetensors" 2>&1 >/dev/null |
	grep -o '[0-9]*->[0-9]*->[0-9]* MB' | awk -F'->' '$2 > m {m = $2} END {print "apply: peak Go heap at a GC " m " MB"}'
rm -f "$OUT/applied.safetensors" "$OUT/t"
