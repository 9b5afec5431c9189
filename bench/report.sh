#!/usr/bin/env bash
# Times `gomerge report` (a base and two models, per-layer statistics, --json, no
# output file) against the I/O floor for the same inputs (bench/floor over the three
# inputs: reads all three, writes and fsyncs one model's worth into WORKDIR/out, as a
# merge of them would), rounds interleaved (floor, report, floor, report, ...), warm
# cache (the inputs are read once before each timed run), on the generated BF16
# llama-shaped fixtures (bench/lib.sh; 1gb: 3 × 1.05 GB).
#
#   bench/report.sh [WORKDIR] [ROUNDS]       (defaults: /tmp/gomerge-bench, 5)
#
# Environment:
#   SIZE      fixture size, 1gb (default), 4gb or tiny
#   BASELINE  another gomerge binary (say, built at an older commit) to time in the
#             same rounds, after the report: its row is "baseline"
#
# Prints wall, user and sys seconds per run and the load average after each round,
# then the medians: wall times and their ratio (report / floor), the median of the
# rounds' ratios, and the same for CPU seconds (user + sys), which a loaded machine
# disturbs less than wall times.
set -euo pipefail
WORK=${1:-/tmp/gomerge-bench}
ROUNDS=${2:-5}
SIZE=${SIZE:-1gb}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_fixtures 2
mkdir -p "$WORK/out"
log "building gomerge and bench/floor"
(cd "$REPO" && go build -o "$WORK/gomerge" ./cmd/gomerge && go build -o "$WORK/floor" ./bench/floor)
M1=$FIX/model1.safetensors M2=$FIX/model2.safetensors
bench_machine
echo "- fixtures: $FIX ($SIZE, BF16); floor output in $WORK/out ($(findmnt -no FSTYPE -T "$WORK/out" | head -1))"
echo

warm() { cat "$A" "$M1" "$M2" >/dev/null; }
T=$(mktemp)
trap 'rm -f "$T" "$WORK/out/f"' EXIT
# timed NAME CMD...: runs CMD once, prints its times and appends "NAME wall cpu" to T.
timed() {
	local name=$1 r=$2
	shift 2
	/usr/bin/time -f '%e %U %S' -o "$T.1" "$@" >/dev/null
	local wall user sys
	read -r wall user sys <"$T.1"
	echo "round $r $name $wall wall $user user $sys sys"
	echo "$name $wall $(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')" >>"$T"
}
warm
"$WORK/floor" "$A" "$M1" "$M2" "$WORK/out/f" && rm -f "$WORK/out/f" # untimed warm-up
for r in $(seq "$ROUNDS"); do
	warm
	timed floor "$r" "$WORK/floor" "$A" "$M1" "$M2" "$WORK/out/f"
	rm -f "$WORK/out/f"
	warm
	timed report "$r" "$WORK/gomerge" report --json --base "$A" "$M1" "$M2"
	if [[ -n ${BASELINE:-} ]]; then
		warm
		timed baseline "$r" "$BASELINE" report --json --base "$A" "$M1" "$M2"
	fi
	echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
done
rm -f "$T.1"
echo
awk '
function median(a, n,   i, j, t) {
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
$1 == "floor" { n++; fw[n] = $2; fc[n] = $3 }
$1 == "report" { m++; rw[m] = $2; rc[m] = $3; wr[m] = $2 / fw[m]; cr[m] = $3 / fc[m] }
$1 == "baseline" { b++; bw[b] = $2; bc[b] = $3; bwr[b] = $2 / fw[b]; bcr[b] = $3 / fc[b] }
END {
	printf "median of %d rounds: floor %.2f s wall %.2f s cpu; report %.2f s wall %.2f s cpu\n", m, median(fw, n), median(fc, n), median(rw, m), median(rc, m)
	printf "wall ratio %.2fx (of the medians), %.2fx (median of the rounds'"'"')\n", median(rw, m) / median(fw, n), median(wr, m)
	printf "cpu ratio  %.2fx (of the medians), %.2fx (median of the rounds'"'"')\n", median(rc, m) / median(fc, n), median(cr, m)
	if (b) {
		printf "baseline: %.2f s wall %.2f s cpu; wall ratio %.2fx, cpu ratio %.2fx (medians of the rounds'"'"')\n", median(bw, b), median(bc, b), median(bwr, b), median(bcr, b)
	}
}' "$T"
