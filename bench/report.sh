#!/usr/bin/env bash
# Times `gomerge report` (a base and two models, per-layer statistics, --json, no
# output file) against the I/O floor for the same inputs (bench/floor over the three
# inputs: reads all three, writes and fsyncs one model's worth, as a merge of them
# would), rounds interleaved (floor, report, floor, report, ...), warm cache (the
# inputs are read once before each timed run), on ~1 GB BF16 llama-shaped checkpoints.
# Prints wall, user and sys seconds per run and the load average after each round.
#
#   bench/report.sh [WORKDIR] [ROUNDS]       (default /tmp/gomerge-bench, 5)
set -euo pipefail
WORK=${1:-/tmp/gomerge-bench}
ROUNDS=${2:-5}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel)
mkdir -p "$WORK/out"
FIX=$WORK/report-1gb
(cd "$REPO" && go build -o "$WORK/gomerge" ./cmd/gomerge && go build -o "$WORK/floor" ./bench/floor)
if [[ ! -f $FIX/model2.safetensors ]]; then
	(cd "$REPO" && go run ./testdata/gen -out "$FIX" -config 1gb -shards 0 -fisher=false -models 2)
fi
B=$FIX/anchor.safetensors M1=$FIX/model1.safetensors M2=$FIX/model2.safetensors
warm() { cat "$B" "$M1" "$M2" >/dev/null; }
warm; "$WORK/floor" "$B" "$M1" "$M2" "$WORK/out/f" && rm -f "$WORK/out/f" # untimed warm-up
for r in $(seq "$ROUNDS"); do
	warm; /usr/bin/time -f "round $r floor %e wall %U user %S sys" "$WORK/floor" "$B" "$M1" "$M2" "$WORK/out/f"; rm -f "$WORK/out/f"
	warm; /usr/bin/time -f "round $r report %e wall %U user %S sys" "$WORK/gomerge" report --json --base "$B" "$M1" "$M2" >/dev/null
	echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
done
