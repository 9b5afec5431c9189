#!/usr/bin/env bash
# Merges from compressed inputs against the same merges from safetensors files, side
# by side in one run (issue 18's target: at most 1.5x in warm cache), on the
# llama-shaped BF16 bench fixtures.
#
#   bench/gmz_merge.sh [1gb|4gb|tiny] [WORKDIR]       (defaults: 1gb, /tmp/gomerge-bench)
#
# Protocol: fixtures as bench/compress.sh makes them; the anchor is compressed on its
# own and the current as a delta against it, once against the plain anchor (both_gmz)
# and once against the compressed one (all_gmz). Each case runs REPS times (default 3),
# interleaved, outputs on /dev/shm when it has room; the run of median wall time is
# reported, with its CPU seconds and the peak Go heap sfa reports (peak RSS would
# count the mapped inputs). Every merge's tensors are compared with the uncompressed
# merge's, and every output removed, after its run.
set -euo pipefail

SIZE=${1:-1gb}
WORK=${2:-/tmp/gomerge-bench}
REPS=${REPS:-3}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_fixtures
bench_outdir gmz-merge-bench
(cd "$REPO" && go build -o "$O/gomerge" ./cmd/gomerge)
GM=$O/gomerge

# The compressed inputs, made by this tree (a delta finds its anchor by the path
# compress recorded, relative to the .gmz's folder).
AZ=$O/anchor.gmz
CZ=$O/current.delta.gmz
CZZ=$O/current.delta-of-gmz.gmz
"$GM" compress "$A" "$AZ" >&2
"$GM" compress "$C" "$CZ" --against "$A" >&2
"$GM" compress "$C" "$CZZ" --against "$AZ" >&2
cat "$A" "$C" "$AZ" "$CZ" "$CZZ" >/dev/null # warm cache

bench_machine
echo "- fixtures $SIZE BF16, $((in_bytes / 1000000)) MB each"
echo "- sizes: anchor.gmz $(($(stat -c %s "$AZ") / 1000000)) MB, current.delta.gmz $(($(stat -c %s "$CZ") / 1000000)) MB"
echo

# The uncompressed merge, untimed, beside the fixtures: every timed output is checked
# against it and removed before the next run, so that every run writes into the same
# free memory. (Outputs left in tmpfs made later runs dearer: on a VM the guest's
# fresh pages fault to the host, and with 5 GB of earlier outputs kept, sfa's system
# time grew from 0.5 to 4-14 s.)
REF=$(mktemp -d "$WORK/gmz-merge-ref.XXXXXX")
trap 'rm -rf "$O" "$REF"' EXIT
"$GM" sfa --anchor "$A" --current "$C" --beta 0.5 --out "$REF/files.safetensors" >/dev/null
check_output() { # NAME OUT: the output's tensors equal the uncompressed merge's
	local name=$1 out=$2
	if [[ $out == *.gmz ]]; then
		"$GM" decompress "$out" "$O/check.safetensors" >/dev/null
		out=$O/check.safetensors
	fi
	"$GM" distance "$REF/files.safetensors" "$out" --json |
		/usr/bin/python3 -c 'import json, sys; l = json.load(sys.stdin)["total"]["l2"]; sys.exit(0 if l == 0 else "%s differs from the uncompressed merge: l2 %r" % (sys.argv[1], l))' "$name"
	rm -f "$O/check.safetensors"
}

declare -A runs
# all_gmz is the layout with no plain file left: the anchor compressed, the current a
# delta against that compressed anchor.
cases=(files anchor_gmz both_gmz all_gmz both_gmz_out_gmz)
run_case() { # NAME: prints "wall cpu peak_heap_bytes"
	local name=$1 out=$O/out.safetensors
	case $name in
	files) set -- --anchor "$A" --current "$C" ;;
	anchor_gmz) set -- --anchor "$AZ" --current "$C" ;;
	both_gmz) set -- --anchor "$AZ" --current "$CZ" ;;
	all_gmz) set -- --anchor "$AZ" --current "$CZZ" ;;
	both_gmz_out_gmz) set -- --anchor "$AZ" --current "$CZ" ; out=$O/out.gmz ;;
	esac
	/usr/bin/time -f '%e %U %S' -o "$O/time" "$GM" sfa "$@" --beta 0.5 --out "$out" --json >"$O/rep.json"
	check_output "$name" "$out" >&2
	rm -f "$out"
	local w u s heap
	read -r w u s <"$O/time"
	heap=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["peak_heap_bytes"])' "$O/rep.json")
	echo "$w $(echo "$u + $s" | bc) $heap"
}
for ((r = 0; r < REPS; r++)); do
	for name in "${cases[@]}"; do
		res=$(run_case "$name")
		log "rep $((r + 1))/$REPS: $name: wall, CPU s, peak heap bytes: $res"
		runs[$name]+="$res"$'\n'
	done
done
declare -A wall cpu heap least
for name in "${cases[@]}"; do # the run of median wall time, and the least wall time
	read -r "wall[$name]" "cpu[$name]" "heap[$name]" <<<"$(printf '%s' "${runs[$name]}" | sort -n | awk '{l[NR] = $0} END {print l[int((NR + 1) / 2)]}')"
	least[$name]=$(printf '%s' "${runs[$name]}" | sort -n | awk 'NR == 1 {print $1}')
done
echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
# The least wall time is the steadier reading where the host stalls some runs (on this
# VM, system time spiking when it hands the guest fresh pages).
echo "| sfa inputs | wall s (median of $REPS) | vs files | CPU s | vs files | least wall s | vs files | peak heap MB |"
echo "|---|---|---|---|---|---|---|---|"
for name in "${cases[@]}"; do
	printf '| %s | %.2f | %.2fx | %.2f | %.2fx | %.2f | %.2fx | %.1f |\n' "$name" "${wall[$name]}" "$(echo "${wall[$name]} / ${wall[files]}" | bc -l)" \
		"${cpu[$name]}" "$(echo "${cpu[$name]} / ${cpu[files]}" | bc -l)" \
		"${least[$name]}" "$(echo "${least[$name]} / ${least[files]}" | bc -l)" "$(echo "${heap[$name]} / 1000000" | bc -l)"
done
