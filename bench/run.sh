#!/usr/bin/env bash
# Times `gomerge sfa` against the I/O floor (bench/floor: read both inputs, mapped or with
# pread, whichever is quicker here; one pass over every byte into a reserved output
# written with pwrite, fsync) and the PyTorch peer (bench/peer/peer_torch.py)
# on llama-shaped BF16 checkpoints, and checks that gomerge and PyTorch produce the same
# tensors. Everything it runs is in this repository.
#
#   bench/run.sh [1gb|4gb] [WORKDIR]          (defaults: 1gb, /tmp/gomerge-bench)
#
# Environment:
#   REPS          repetitions of each tool, interleaved (default 3)
#   CACHE         auto | cold | warm (default auto: cold if the page cache can be dropped)
#   PYTHON        a python3 that can `import torch` (default: found, else apt-installed)
#   PROFILE=1     afterwards, run gomerge once more under `strace -c -f` and `perf stat`
#   KEEP=1        keep the two outputs used for the correctness check
#
# Protocol: one untimed floor run, then REPS rounds of floor (mapped), floor-pread,
# gomerge, torch; the ratio column is against the quicker floor's median; before
# each run the page cache is dropped (cold) or the inputs are read once (warm); after
# each run `sync` is timed separately ("sync after": the writeback a tool left behind;
# torch does not fsync) and the output is deleted, except the last round's gomerge and
# torch outputs, which are compared and then deleted.
set -euo pipefail

SIZE=${1:-1gb}
WORK=${2:-/tmp/gomerge-bench}
REPS=${REPS:-3}
CACHE=${CACHE:-auto}
BETA=0.5

case $SIZE in
1gb) NEED_GB=6 ;;
4gb) NEED_GB=20 ;;
*)
	echo "usage: bench/run.sh [1gb|4gb] [WORKDIR]" >&2
	exit 2
	;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel)
PEER=$REPO/bench/peer/peer_torch.py

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
FIX=$WORK/fixtures-$SIZE
OUT=$WORK/out
TMPD=$(mktemp -d "$WORK/.run.XXXXXX")
trap 'rm -rf "$TMPD"' EXIT
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- prerequisites -------------------------------------------------------------------
APT_UPDATED=
apt_install() {
	if [[ -z $APT_UPDATED ]]; then
		log "apt-get update"
		apt-get update -qq >/dev/null
		APT_UPDATED=1
	fi
	log "apt-get install $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

[[ -x /usr/bin/time ]] || apt_install time

# `python3` on PATH may be a pyenv/venv interpreter that cannot see Debian's
# python3-torch; Debian's own interpreter is /usr/bin/python3.
find_python() {
	local p
	for p in ${PYTHON:-} python3 /usr/bin/python3; do
		if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch, numpy' >/dev/null 2>&1; then
			command -v "$p"
			return 0
		fi
	done
	return 1
}
if ! PY=$(find_python); then
	apt_install python3-torch python3-numpy
	PY=$(find_python) || {
		echo "run.sh: no python3 can import torch, even after apt-get install python3-torch" >&2
		exit 1
	}
fi

# ---- machine -------------------------------------------------------------------------
avail_gb=$(df -Pk "$WORK" | awk 'NR==2 {printf "%d", $4/1048576}')
echo "## Machine"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "- memory: $(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
echo "- WORKDIR: $WORK on $(findmnt -no SOURCE,FSTYPE -T "$WORK" | tr -s ' ' ' ') ($(df -Ph "$WORK" | awk 'NR==2 {print $4}') free)"
echo "- kernel: $(uname -r); $(go version | cut -d' ' -f3-)"
echo "- load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- gomerge tree: $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo ' + uncommitted changes')"
echo "- python: $PY; torch $("$PY" -c 'import torch; print(torch.__version__, "threads", torch.get_num_threads())')"
echo

# ---- build ---------------------------------------------------------------------------
log "building gomerge and floor"
(cd "$REPO" && go build -o "$WORK/gomerge" ./cmd/gomerge && go build -o "$WORK/floor" ./bench/floor)
GM=$WORK/gomerge

# ---- fixtures ------------------------------------------------------------------------
A=$FIX/anchor.safetensors
C=$FIX/current.safetensors
if [[ -s $A && -s $C ]]; then
	log "fixtures present in $FIX"
else
	if ((avail_gb < NEED_GB)); then
		echo "run.sh: $SIZE needs ~${NEED_GB} GB free in $WORK, have ${avail_gb} GB" >&2
		exit 1
	fi
	log "generating $SIZE fixtures (slow: Go RNG over every element)"
	rm -rf "$FIX.tmp"
	t0=$(date +%s)
	(cd "$REPO" && go run ./testdata/gen -out "$FIX.tmp" -config "$SIZE" -shards 0 -fisher=false) >&2
	rm -rf "$FIX"
	mv "$FIX.tmp" "$FIX"
	log "fixtures generated in $(($(date +%s) - t0)) s"
fi
avail_gb=$(df -Pk "$WORK" | awk 'NR==2 {printf "%d", $4/1048576}')
in_bytes=$(($(stat -c %s "$A") + $(stat -c %s "$C")))
out_need_gb=$((in_bytes / 1000000000 + 2)) # two kept outputs of ~half the input each
if ((avail_gb < out_need_gb)); then
	echo "run.sh: outputs need ~${out_need_gb} GB free in $WORK, have ${avail_gb} GB" >&2
	exit 1
fi

# ---- cache mode ----------------------------------------------------------------------
drop_caches() { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null
case $CACHE in
auto) if drop_caches; then CACHE=cold; else CACHE=warm; fi ;;
cold) drop_caches || {
	echo "run.sh: CACHE=cold but cannot write /proc/sys/vm/drop_caches" >&2
	exit 1
} ;;
warm) ;;
*)
	echo "run.sh: CACHE must be auto, cold or warm" >&2
	exit 2
	;;
esac
if [[ $CACHE == cold ]]; then
	echo "Cache mode: **cold** (sync; echo 3 > /proc/sys/vm/drop_caches before every timed run)"
else
	echo "Cache mode: **warm** (cannot drop the page cache, or CACHE=warm: the inputs are read once"
	echo "with cat > /dev/null before every timed run, so every run sees them cached)"
fi
echo
prepare() {
	if [[ $CACHE == cold ]]; then
		drop_caches
	else
		cat "$A" "$C" >/dev/null
	fi
}

# ---- timed runs ----------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"
RESULTS=$TMPD/results.tsv # tool rep wall rss_kb user sys majflt minflt sync_s gm_seconds gm_heap other_cpu steal
HZ=$(getconf CLK_TCK)
# busy,steal CPU ticks of the whole machine (user nice system irq softirq steal; steal)
cpu_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9 "," $9}' /proc/stat; }
: >"$RESULTS"

timed() { # tool rep
	local tool=$1 rep=$2 o=$OUT/$1.safetensors
	local -a cmd
	case $tool in
	floor) cmd=("$WORK/floor" -read mmap "$A" "$C" "$o") ;;
	floor-pread) cmd=("$WORK/floor" -read pread "$A" "$C" "$o") ;;
	gomerge) cmd=("$GM" sfa --anchor "$A" --current "$C" --beta "$BETA" --out "$o" --json) ;;
	torch) cmd=("$PY" "$PEER" sfa "$o" "$A" "$C" "$BETA") ;;
	esac
	prepare
	local t0 t1 s0 s1 c0 c1
	c0=$(cpu_ticks)
	t0=$(date +%s%N)
	if ! /usr/bin/time -f '%M %U %S %F %R' -o "$TMPD/time" "${cmd[@]}" >"$TMPD/stdout" 2>"$TMPD/stderr"; then
		echo "run.sh: $tool failed:" >&2
		cat "$TMPD/stderr" >&2
		exit 1
	fi
	t1=$(date +%s%N)
	c1=$(cpu_ticks)
	# Writeback the tool left behind (torch does not fsync; floor and gomerge do).
	s0=$(date +%s%N)
	sync
	s1=$(date +%s%N)
	local gs=- gh=-
	if [[ $tool == gomerge ]]; then
		read -r gs gh < <("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["seconds"], r["peak_heap_bytes"])' "$TMPD/stdout")
	fi
	local wall sync_s other steal
	read -r other steal < <(awk -v a="$c0" -v b="$c1" -v hz="$HZ" '{u=$2; s=$3} END {split(a, x, ","); split(b, y, ","); printf "%.2f %.2f\n", (y[1]-x[1])/hz - u - s, (y[2]-x[2])/hz}' "$TMPD/time")
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b-a)/1e9}')
	sync_s=$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.3f", (b-a)/1e9}')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$rep" "$wall" "$(tail -1 "$TMPD/time" | tr ' ' '\t')" "$sync_s" "$gs" "$gh" "$other" "$steal" >>"$RESULTS"
	log "$tool #$rep: ${wall}s wall, sync after ${sync_s}s, maxrss $(awk '{printf "%.0f MiB", $1/1024}' "$TMPD/time" | tail -1)$([[ $tool == gomerge ]] && echo ", gomerge says ${gs}s, peak heap $((gh / 1048576)) MiB")"
	if [[ $rep == "$REPS" && $tool != floor* ]]; then
		mv "$o" "$OUT/check-$tool.safetensors" # kept for the correctness check
	else
		rm -f "$o"
	fi
}

# One untimed floor run first: the first large write after a build or a cache drop is
# often much slower on a VM (page allocation, ext4 block allocation), and would otherwise
# land on floor #1.
log "untimed warm-up run of floor"
prepare
"$WORK/floor" "$A" "$C" "$OUT/warmup.safetensors"
rm -f "$OUT/warmup.safetensors"
sync
log "timing floor, floor-pread, gomerge, torch x$REPS, interleaved; $SIZE: $in_bytes input bytes"
for rep in $(seq 1 "$REPS"); do
	for tool in floor floor-pread gomerge torch; do
		timed "$tool" "$rep"
	done
done

# ---- table ---------------------------------------------------------------------------
median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
col() { awk -F'\t' -v t="$1" -v c="$2" '$1==t {print $c}' "$RESULTS"; }
# The floor is the cheaper of its two ways of reading (mapped, or pread into reused
# buffers): which one is depends on the host (bench/floor's comment).
floor_med=$( (
	col floor 3 | median
	col floor-pread 3 | median
) | sort -g | head -1)

echo "## Results: $SIZE ($(awk -v b="$in_bytes" 'BEGIN {printf "%.2f", b/1e9}') GB of input, median of $REPS, $CACHE cache)"
echo
echo "| tool | median wall s | GB/s of input read | ratio to floor | max RSS | peak Go heap | user s | sys s | major faults | minor faults | sync after s | other CPU s | steal s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for tool in floor floor-pread gomerge torch; do
	w=$(col $tool 3 | median)
	rss=$(col $tool 4 | sort -g | tail -1)
	heap=-
	if [[ $tool == gomerge ]]; then
		heap=$(col gomerge 11 | sort -g | tail -1 | awk '{printf "%.1f MiB", $1/1048576}')
	fi
	awk -v t="$tool" -v w="$w" -v f="$floor_med" -v b="$in_bytes" -v rss="$rss" -v heap="$heap" \
		-v u="$(col $tool 5 | median)" -v s="$(col $tool 6 | median)" -v mj="$(col $tool 7 | median)" \
		-v mn="$(col $tool 8 | median)" -v sy="$(col $tool 9 | median)" \
		-v ot="$(col $tool 12 | median)" -v st="$(col $tool 13 | median)" \
		'BEGIN {printf "| %s | %.2f | %.2f | %.2f× | %.0f MiB | %s | %.2f | %.2f | %d | %d | %.2f | %.2f | %.2f |\n", t, w, b/w/1e9, w/f, rss/1024, heap, u, s, mj, mn, sy, ot, st}'
done
echo
echo "All runs (wall s): $(awk -F'\t' '{printf "%s#%s %s; ", $1, $2, $3}' "$RESULTS")"
echo "gomerge's own --json seconds: $(col gomerge 10 | tr '\n' ' ')"
echo "max RSS is /usr/bin/time's %M (peak resident set, file-backed mmap pages included);"
echo "peak Go heap is gomerge's peak_heap_bytes (max over runs); user/sys/faults are medians."
echo "other CPU s: CPU time the whole machine was busy during the run beyond the tool's own user+sys"
echo "(kernel writeback threads, other processes); steal s: time the hypervisor ran someone else."
echo

# ---- correctness ---------------------------------------------------------------------
G=$OUT/check-gomerge.safetensors
T=$OUT/check-torch.safetensors
echo "## Correctness: gomerge vs torch"
echo
"$GM" distance "$G" "$T" --json >"$TMPD/dist.json"
"$PY" - "$G" "$T" "$TMPD/dist.json" <<'EOF'
import json, struct, sys
import numpy as np

def load(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    meta = h.pop("__metadata__", None)
    return h, np.memmap(p, dtype=np.uint8, mode="r", offset=8 + n), meta

hg, mg, meta = load(sys.argv[1])
ht, mt, _ = load(sys.argv[2])
d = json.load(open(sys.argv[3]))["total"]
print(f"- `gomerge distance` l2 = {d['l2']!r} (norm_a {d['norm_a']:.6g}, norm_b {d['norm_b']:.6g}, {d['elements']} elements)")
same_names = set(hg) == set(ht)
print(f"- tensor names: {'same' if same_names else 'DIFFERENT'} ({len(hg)} vs {len(ht)})")
bad, diff, maxd, total = 0, 0, 0, 0
for k in sorted(set(hg) & set(ht)):
    a, b = hg[k], ht[k]
    if a["dtype"] != b["dtype"] or a["shape"] != b["shape"]:
        bad += 1
        continue
    x = np.asarray(mg[a["data_offsets"][0]:a["data_offsets"][1]])
    y = np.asarray(mt[b["data_offsets"][0]:b["data_offsets"][1]])
    if a["dtype"] in ("BF16", "F16"):
        x, y = x.view(np.int16).astype(np.int32), y.view(np.int16).astype(np.int32)
    ne = x != y
    n = int(ne.sum())
    diff += n
    total += x.size
    if n:
        maxd = max(maxd, int(np.abs(x[ne] - y[ne]).max()))
print(f"- dtype/shape mismatches: {bad}; elements compared: {total}; bitwise different: {diff}"
      + (f" (largest difference {maxd} units in the last place)" if diff else ""))
print(f"- verdict: {'IDENTICAL tensors' if same_names and not bad and not diff else 'DIFFERENT (see above)'}")
EOF
echo
if [[ ${KEEP:-0} != 1 ]]; then
	rm -f "$G" "$T"
fi

# ---- optional profile ----------------------------------------------------------------
if [[ ${PROFILE:-0} == 1 ]]; then
	echo "## Profile of one gomerge run ($CACHE cache)"
	echo
	o=$OUT/profile.safetensors
	if command -v strace >/dev/null 2>&1; then
		prepare
		strace -f -c -o "$TMPD/strace" "$GM" sfa --anchor "$A" --current "$C" --beta "$BETA" --out "$o" --json >/dev/null
		rm -f "$o"
		echo '```'
		echo "strace -f -c (syscall time; strace itself slows the run):"
		head -25 "$TMPD/strace"
		echo '```'
	fi
	if command -v perf >/dev/null 2>&1; then
		prepare
		perf stat -e task-clock,page-faults,major-faults,minor-faults,context-switches,cpu-migrations \
			-o "$TMPD/perf" "$GM" sfa --anchor "$A" --current "$C" --beta "$BETA" --out "$o" --json >/dev/null || true
		rm -f "$o"
		echo '```'
		cat "$TMPD/perf"
		echo '```'
	fi
	echo
fi
