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
#   REPS     repetitions of each timed command; the fastest is reported (default 3)
#   ZSTD19=1 also run zstd -19 (slow: minutes per GB)
#
# Protocol: the inputs are read once (warm cache); each tool runs REPS times and its
# fastest wall time is kept, with the CPU seconds (user + sys) of that run. MB/s is
# the uncompressed size (10^6 bytes) over wall seconds, for compression and
# decompression alike. Every output is decompressed and compared byte for byte with
# its input. gomerge writes through a temporary file that it fsyncs and renames;
# zstd writes its output without fsync.
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

# timed CMD...: runs REPS times, sets BEST_WALL and BEST_CPU of the fastest run.
timed() {
	BEST_WALL= BEST_CPU=
	local r
	for ((r = 0; r < REPS; r++)); do
		/usr/bin/time -f '%e %U %S' -o "$O/time" "$@" >/dev/null
		read -r wall user sys <"$O/time"
		if [[ -z $BEST_WALL ]] || awk -v a="$wall" -v b="$BEST_WALL" 'BEGIN {exit !(a < b)}'; then
			BEST_WALL=$wall
			BEST_CPU=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
		fi
	done
}
mbps() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", n / 1e6 / (s > 0 ? s : 0.001)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 ($5 s, $6 CPU-s) | $7 ($8 s, $9 CPU-s) |"); }

bench_zstd() { # NAME INPUT LEVEL
	local name=$1 in=$2 lvl=$3 z=$O/z.zst
	timed zstd "-$lvl" -T2 -q -f "$in" -o "$z"
	local cw=$BEST_WALL cc=$BEST_CPU size
	size=$(stat -c %s "$z")
	timed zstd -d -q -f "$z" -o "$O/z.out"
	cmp -s "$in" "$O/z.out" || { echo "zstd round trip differs" >&2; exit 1; }
	row "$name" "zstd -$lvl -T2" "$(ratio "$in_bytes" "$size")" "$(mbps "$in_bytes" "$cw")" "$cw" "$cc" \
		"$(mbps "$in_bytes" "$BEST_WALL")" "$BEST_WALL" "$BEST_CPU"
	rm -f "$z" "$O/z.out"
}

bench_gmz() { # NAME INPUT [--against REF]
	local name=$1 in=$2
	shift 2
	local g=$O/g.gmz out=$O/g.safetensors
	"$GM" compress "$in" "$g" --stats --json "$@" >"$O/stats.json"
	timed "$GM" compress "$in" "$g" "$@"
	local cw=$BEST_WALL cc=$BEST_CPU size
	size=$(stat -c %s "$g")
	timed "$GM" decompress "$g" "$out" "$@"
	cmp -s "$in" "$out" || { echo "gomerge round trip differs" >&2; exit 1; }
	row "$name" "gomerge compress" "$(ratio "$in_bytes" "$size")" "$(mbps "$in_bytes" "$cw")" "$cw" "$cc" \
		"$(mbps "$in_bytes" "$BEST_WALL")" "$BEST_WALL" "$BEST_CPU"
	/usr/bin/python3 - "$O/stats.json" "$name" >>"$O/bounds.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
planes = ", ".join(f"byte {p['plane']}: {p['bits']:.3f} bits" for p in r["planes"] if p["elem_size"] == 2)
hdr = r["in_bytes"] - r["tensor_bytes"]
bound = r["in_bytes"] / (r["bound_bytes"] + hdr)
print(f"| {sys.argv[2]} | {planes} | {bound:.3f} | {r['ratio']:.3f} | {100 * (r['stored_bytes'] / r['bound_bytes'] - 1):.2f} % |")
PY
	rm -f "$g" "$out"
}

log "dense: gomerge"
bench_gmz "dense BF16" "$A"
log "dense: zstd -3"
bench_zstd "dense BF16" "$A" 3
[[ ${ZSTD19:-} == 1 ]] && { log "dense: zstd -19"; bench_zstd "dense BF16" "$A" 19; }
log "XOR delta: gomerge"
bench_gmz "XOR delta (current vs anchor)" "$C" --against "$A"
log "XOR delta: zstd -3"
bench_zstd "XOR delta (current vs anchor)" "$X" 3
[[ ${ZSTD19:-} == 1 ]] && { log "XOR delta: zstd -19"; bench_zstd "XOR delta (current vs anchor)" "$X" 19; }

echo "## Ratio and speed ($((in_bytes / 1000000)) MB input, fastest of $REPS)"
echo
echo "| data | tool | ratio | compress MB/s (wall, CPU) | decompress MB/s (wall, CPU) |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
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
