#!/usr/bin/env bash
# Merges from compressed inputs against the same merges from safetensors files, side
# by side in one run (issue 18's target: at most 1.5x in warm cache), on the
# llama-shaped BF16 bench fixtures.
#
#   bench/gmz_merge.sh [1gb|4gb|tiny] [WORKDIR]       (defaults: 1gb, /tmp/gomerge-bench)
#
# Protocol: fixtures as bench/compress.sh makes them; the anchor is compressed on its
# own and the current as a delta against it. Each case runs REPS times (default 3),
# interleaved, outputs on /dev/shm when it has room; the fastest wall time is kept,
# with the CPU seconds and the peak RSS of that run. Every merge's tensors are
# compared with the uncompressed merge's.
set -euo pipefail

SIZE=${1:-1gb}
WORK=${2:-/tmp/gomerge-bench}
REPS=${REPS:-3}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_fixtures
bench_outdir gmz-merge-bench
(cd "$REPO" && go build -o "$O/gomerge" ./cmd/gomerge)
GM=$O/gomerge

# The compressed inputs live beside the fixtures: a delta finds its anchor by the
# path compress recorded, relative to the .gmz's folder.
AZ=$FIX/anchor.gmz
CZ=$FIX/current.delta.gmz
[[ -s $AZ ]] || "$GM" compress "$A" "$AZ" >&2
[[ -s $CZ ]] || "$GM" compress "$C" "$CZ" --against "$A" >&2
cat "$A" "$C" "$AZ" "$CZ" >/dev/null # warm cache

bench_machine
echo "- fixtures $SIZE BF16, $((in_bytes / 1000000)) MB each"
echo "- sizes: anchor.gmz $(($(stat -c %s "$AZ") / 1000000)) MB, current.delta.gmz $(($(stat -c %s "$CZ") / 1000000)) MB"
echo

declare -A best cpu rss
cases=(files anchor_gmz both_gmz both_gmz_out_gmz)
run_case() {
	local name=$1 out
	case $name in
	files) set -- --anchor "$A" --current "$C" ; out=$O/files.safetensors ;;
	anchor_gmz) set -- --anchor "$AZ" --current "$C" ; out=$O/anchor_gmz.safetensors ;;
	both_gmz) set -- --anchor "$AZ" --current "$CZ" ; out=$O/both_gmz.safetensors ;;
	both_gmz_out_gmz) set -- --anchor "$AZ" --current "$CZ" ; out=$O/both.gmz ;;
	esac
	local res
	res=$( { /usr/bin/time -f '%U %S %M' "$GM" sfa "$@" --beta 0.5 --out "$out" >/dev/null; } 2>&1 | tail -1)
	echo "$res"
}
for ((r = 0; r < REPS; r++)); do
	for name in "${cases[@]}"; do
		t0=$(date +%s.%N)
		res=$(run_case "$name")
		t1=$(date +%s.%N)
		wall=$(echo "$t1 - $t0" | bc)
		read -r u s m <<<"$res"
		if [[ -z ${best[$name]:-} ]] || (($(echo "$wall < ${best[$name]}" | bc))); then
			best[$name]=$wall cpu[$name]=$(echo "$u + $s" | bc) rss[$name]=$m
		fi
	done
done
"$GM" decompress "$O/both.gmz" "$O/both_gmz_out.safetensors" >/dev/null
for f in anchor_gmz both_gmz both_gmz_out; do
	"$GM" distance "$O/files.safetensors" "$O/$f.safetensors" --json |
		/usr/bin/python3 -c 'import json, sys; l = json.load(sys.stdin)["total"]["l2"]; sys.exit(0 if l == 0 else "%s differs from the uncompressed merge: l2 %r" % (sys.argv[1], l))' "$f"
done
echo "| sfa inputs | wall s (best of $REPS) | vs files | CPU s | peak RSS MB |"
echo "|---|---|---|---|---|"
for name in "${cases[@]}"; do
	printf '| %s | %.2f | %.2fx | %.2f | %d |\n' "$name" "${best[$name]}" "$(echo "${best[$name]} / ${best[files]}" | bc -l)" "${cpu[$name]}" "$((rss[$name] / 1024))"
done
