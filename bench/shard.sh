#!/usr/bin/env bash
# Times a merge split across N workers on one machine (docs/cluster.md) against the
# same merge in one process, and checks that the folders are byte-identical.
#
#   bench/shard.sh [1gb|4gb] [WORKDIR]     (defaults: 1gb, /tmp/gomerge-shard-bench)
#
# Environment: REPS (default 3), WORKERS (default "1 2 4"), GOMERGE (a built binary;
# default: built from this checkout).
#
# Per round: the single-process `gomerge sfa` into a folder, then for each N: N workers
# started together, each with --threads cores/N, then `gomerge finalize`. It reports
# wall seconds for the workers (the slowest), for finalize, and in total. Inputs stay
# in the page cache (warm): this measures the CPU and write side, plus sharding's own
# costs (each worker reads back what it wrote to checksum it, finalize reads all of it).
set -euo pipefail
SIZE=${1:-1gb}
WORK=${2:-/tmp/gomerge-shard-bench}
REPS=${REPS:-3}
WORKERS=${WORKERS:-1 2 4}
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
mkdir -p "$WORK"
BIN=${GOMERGE:-$WORK/gomerge}
[ -n "${GOMERGE:-}" ] || go build -o "$BIN" ./cmd/gomerge
[ -e "$WORK/current/config.json" ] || go run ./testdata/gen -out "$WORK" -config "$SIZE" -shards 8 -fisher=false
CORES=$(nproc)
now() { date +%s.%N; }
tree_sum() { (cd "$1" && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-16); }
cat "$WORK/anchor.safetensors" "$WORK"/current/*.safetensors >/dev/null # warm
ARGS=(sfa --anchor "$WORK/anchor.safetensors" --current "$WORK/current" --beta 0.5)
printf '| run | workers | merge s | finalize s | total s | tree |\n|---|---|---|---|---|---|\n'
for r in $(seq "$REPS"); do
  rm -rf "$WORK/single"
  t0=$(now); "$BIN" "${ARGS[@]}" --out "$WORK/single" >/dev/null; t1=$(now)
  want=$(tree_sum "$WORK/single")
  printf '| %d | single process | %.2f | – | %.2f | %s |\n' "$r" "$(echo "$t1-$t0" | bc)" "$(echo "$t1-$t0" | bc)" "$want"
  for n in $WORKERS; do
    out="$WORK/sharded-$n"; rm -rf "$out"
    threads=$(( CORES / n > 0 ? CORES / n : 1 ))
    t0=$(now); pids=()
    for i in $(seq 0 $((n-1))); do
      "$BIN" "${ARGS[@]}" --out "$out" --shard-index "$i" --shard-count "$n" --threads "$threads" >/dev/null & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    t1=$(now); "$BIN" finalize "$out" >/dev/null; t2=$(now)
    got=$(tree_sum "$out")
    [ "$got" = "$want" ] || { echo "sharded N=$n differs from the single-process output"; exit 1; }
    printf '| %d | %d | %.2f | %.2f | %.2f | %s |\n' "$r" "$n" "$(echo "$t1-$t0" | bc)" "$(echo "$t2-$t1" | bc)" "$(echo "$t2-$t0" | bc)" "$got"
    rm -rf "$out"
  done
done
