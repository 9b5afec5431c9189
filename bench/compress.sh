#!/usr/bin/env bash
# Lossless compression of checkpoints: `gomerge compress` (.gmz) side by side with
# Debian's zstd CLI, on the llama-shaped BF16 bench fixtures, dense and as an XOR
# delta against the anchor, with the order-0 entropy bound of the byte planes.
#
#   bench/compress.sh [1gb|4gb|tiny] [WORKDIR]       (defaults: 1gb, /tmp/gomerge-bench)
#
# Environment:
#   OUTDIR   where outputs go (default /dev/shm/gmz-bench when /dev/shm has room,
#            else WORKDIR/gmz-bench): a tmpfs keeps the disk out of the timings
#   REPS     repetitions of each timed command; the median is reported (default 3)
#   ZSTD19=1 also run zstd -19 (slow: minutes per GB)
#
# Protocol: the inputs are read once (warm cache); each repetition runs every tool
# once, one after another (interleaved), REPS times, and each tool's median wall
# time is reported, with the CPU seconds (user + sys) of that run. MB/s is
# the uncompressed size (10^6 bytes) over wall seconds, for compression and
# decompression alike. Every output is decompressed and compared byte for byte with
# its input. gomerge writes through a temporary file that it fsyncs and renames;
# zstd writes its output without fsync. A last table times `gomerge decompress`
# alone with --threads 1 and 2 (wall GB/s, with the load average around it).
set -euo pipefail

SIZE=${1:-1gb}
WORK=${2:-/tmp/gomerge-bench}
REPS=${REPS:-3}
case $SIZE in 1gb | 4gb | tiny) ;; *)
	echo "usage: bench/compress.sh [1gb|4gb|tiny] [WORKDIR]" >&2
	exit 2
	;;
esac

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need=()
command -v zstd >/dev/null || need+=(zstd)
[[ -x /usr/bin/time ]] || need+=(time)
/usr/bin/python3 -c 'import numpy' 2>/dev/null || need+=(python3-numpy)
if ((${#need[@]})); then
	log "apt-get install ${need[*]}"
	apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

bench_fixtures
bench_outdir gmz-bench

log "building gomerge"
(cd "$REPO" && go build -o "$O/gomerge" ./cmd/gomerge)
GM=$O/gomerge

bench_machine
echo "- $(zstd --version)"
echo "- fixtures: $FIX ($SIZE, BF16); outputs in $OUTDIR ($(findmnt -no FSTYPE -T "$OUTDIR" | head -1))"
echo

# The XOR of current and anchor as a plain file, for zstd (gomerge XORs internally):
# the same bytes as a safetensors file whose tensor data is current ^ anchor.
X=$O/xor.bin
/usr/bin/python3 - "$A" "$C" "$X" <<'PY'
import sys, numpy as np
a = np.fromfile(sys.argv[1], dtype=np.uint8)
c = np.fromfile(sys.argv[2], dtype=np.uint8)
assert a.size == c.size
n = int.from_bytes(a[:8].tobytes(), "little") + 8
assert bytes(a[:n]) == bytes(c[:n]), "anchor and current must have the same header"
x = a ^ c
x[:n] = a[:n]
x.tofile(sys.argv[3])
PY
cat "$A" "$C" "$X" >/dev/null # warm cache

# once CMD...: runs CMD once, sets WALL and CPU (user + sys seconds).
once() {
	/usr/bin/time -f '%e %U %S' -o "$O/time" "$@" >/dev/null
	local user sys
	read -r WALL user sys <"$O/time"
	CPU=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
}
mbps() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", n / 1e6 / (s > 0 ? s : 0.001)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

# Every case is a data set and a tool; each repetition runs every case's compression
# and decompression once, case after case (interleaved, so that a change in the
# machine's load hits every tool alike); the run of median wall time is reported.
declare -A runs best_w best_c size
keep() { runs[$1]+="$WALL $CPU"$'\n'; } # KEY
median() { # KEY: sets best_w and best_c[KEY] from its median run
	local m
	m=$(printf '%s' "${runs[$1]}" | sort -n | awk '{w[NR] = $1; c[NR] = $2} END {i = int((NR + 1) / 2); print w[i], c[i]}')
	read -r "best_w[$1]" "best_c[$1]" <<<"$m"
}
cases=("dense|gmz" "dense|zstd3" "xor|gmz" "xor|zstd3")
[[ ${ZSTD19:-} == 1 ]] && cases+=("dense|zstd19" "xor|zstd19")
input() { case $1 in dense) echo "$A" ;; xor) echo "$C" ;; esac; }
run_case() { # DATA TOOL
	local data=$1 tool=$2 in z out
	in=$(input "$data")
	case $tool in
	gmz)
		local ag=()
		[[ $data == xor ]] && ag=(--against "$A")
		z=$O/$data.gmz out=$O/$data.back.safetensors
		once "$GM" compress "$in" "$z" "${ag[@]}"
		keep "$data|$tool|c"
		once "$GM" decompress "$z" "$out" "${ag[@]}"
		keep "$data|$tool|d"
		;;
	zstd*)
		[[ $data == xor ]] && in=$X
		z=$O/$data.$tool.zst out=$O/$data.$tool.back
		once zstd "-${tool#zstd}" -T2 -q -f "$in" -o "$z"
		keep "$data|$tool|c"
		once zstd -d -q -f "$z" -o "$out"
		keep "$data|$tool|d"
		;;
	esac
	cmp -s "$in" "$out" || { echo "$tool round trip of $data differs" >&2; exit 1; }
	size[$data|$tool]=$(stat -c %s "$z")
	rm -f "$z" "$out"
}
for data in dense xor; do # the entropy bounds, untimed
	ag=()
	[[ $data == xor ]] && ag=(--against "$A")
	"$GM" compress "$(input $data)" "$O/stats.gmz" --stats --json "${ag[@]}" >"$O/stats-$data.json"
	rm -f "$O/stats.gmz"
done
for ((r = 0; r < REPS; r++)); do
	for c in "${cases[@]}"; do
		log "rep $((r + 1))/$REPS: $c"
		run_case "${c%|*}" "${c#*|}"
	done
done

# Decompression alone, in wall time: the dense .gmz decoded back to the tmpfs
# ($OUTDIR) with --threads 1 and 2, the .gmz and the output's folder warm, REPS
# interleaved runs each; GB/s is the uncompressed size (10^9 bytes) over the median
# wall time. The load average before and after says how quiet the machine was.
"$GM" compress "$A" "$O/dense.gmz" >/dev/null
cat "$O/dense.gmz" >/dev/null
DLOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 0; r < REPS; r++)); do
	for th in 1 2; do
		log "rep $((r + 1))/$REPS: decompress --threads $th"
		once "$GM" decompress "$O/dense.gmz" "$O/dense.back.safetensors" --threads "$th"
		keep "decompress|$th"
		cmp -s "$A" "$O/dense.back.safetensors" || { echo "decompress --threads $th differs" >&2; exit 1; }
		rm -f "$O/dense.back.safetensors"
	done
done
DLOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
rm -f "$O/dense.gmz"
DROWS=()
for th in 1 2; do
	median "decompress|$th"
	DROWS+=("| $th | $(awk -v n="$in_bytes" -v s="${best_w[decompress|$th]}" 'BEGIN {printf "%.2f", n / 1e9 / (s > 0 ? s : 0.001)}') | ${best_w[decompress|$th]} s | ${best_c[decompress|$th]} CPU-s ($(awk -v n="$in_bytes" -v c="${best_c[decompress|$th]}" 'BEGIN {printf "%.2f", c / (n / 1e9)}') per GB) |")
done

ROWS=()
for c in "${cases[@]}"; do
	median "$c|c"
	median "$c|d"
	data=${c%|*} tool=${c#*|}
	case $data in dense) label="dense BF16" ;; xor) label="XOR delta (current vs anchor)" ;; esac
	case $tool in gmz) tname="gomerge compress" ;; *) tname="zstd -${tool#zstd} -T2" ;; esac
	ROWS+=("| $label | $tname | $(ratio "$in_bytes" "${size[$c]}") | $(mbps "$in_bytes" "${best_w[$c|c]}") (${best_w[$c|c]} s, ${best_c[$c|c]} CPU-s) | $(mbps "$in_bytes" "${best_w[$c|d]}") (${best_w[$c|d]} s, ${best_c[$c|d]} CPU-s) |")
done
for data in dense xor; do
	case $data in dense) label="dense BF16" ;; xor) label="XOR delta (current vs anchor)" ;; esac
	/usr/bin/python3 - "$O/stats-$data.json" "$label" >>"$O/bounds.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
planes = ", ".join(f"byte {p['plane']}: {p['bits']:.3f} bits" for p in r["planes"] if p["elem_size"] == 2)
hdr = r["in_bytes"] - r["tensor_bytes"]
bound = r["in_bytes"] / (r["bound_bytes"] + hdr)
print(f"| {sys.argv[2]} | {planes} | {bound:.3f} | {r['ratio']:.3f} | {100 * (r['stored_bytes'] / r['bound_bytes'] - 1):.2f} % |")
PY
done
echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

echo "## Ratio and speed ($((in_bytes / 1000000)) MB input, median of $REPS interleaved runs)"
echo
echo "| data | tool | ratio | compress MB/s (wall, CPU) | decompress MB/s (wall, CPU) |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "## Decompression wall time (dense BF16, output on $(findmnt -no FSTYPE -T "$OUTDIR" | head -1), warm cache, median of $REPS interleaved runs)"
echo
echo "Load average $DLOAD0 before, $DLOAD1 after (1, 5, 15 minutes)."
echo
echo "| --threads | GB/s (wall) | wall | CPU (user + sys) |"
echo "|---|---|---|---|"
printf '%s\n' "${DROWS[@]}"
echo
echo "## Order-0 entropy bound of the byte planes"
echo
echo "Each BF16 byte plane (byte 0: low exponent bit and mantissa; byte 1: sign and"
echo "exponent) coded on its own, with the file's header stored as is; gomerge's"
echo "distance is its tensor data over that bound."
echo
echo "| data | plane entropy | bound ratio | gomerge ratio | gomerge above bound |"
echo "|---|---|---|---|---|"
cat "$O/bounds.md"
