#!/usr/bin/env bash
# The trainer's SFA round trip against `gomerge sfa --out` alone, side by side, on a
# llama-shaped BF16 state dict, in each folder given (default: one on disk, one on
# tmpfs). See bench/roundtrip/README.md.
#
#   bench/roundtrip/run.sh [LAYERS] [FOLDER...]
#
#   LAYERS   transformer layers besides embeddings and head (default 3: 0.57 GB BF16;
#            7 is 0.97 GB)
#   FOLDER   where the checkpoints live (default /tmp/gomerge-roundtrip and
#            /dev/shm/gomerge-roundtrip)
#
# Environment: REPS (3) rounds of [gomerge alone, round trip staged in /dev/shm (not
# in a folder on tmpfs, where SFA does not stage), round trip, round trip with
# sync_current=False] per folder, interleaved; the first round also checks the weights
# bit for bit. OLD_REV (1aef788, the gomerge.py before the zero-copy work) is also timed
# OLD_REPS (1) times in the first folder, OLD_REPS=0 to skip; PYTHON (/usr/bin/python3, Debian's torch); KEEP=1 keeps the
# checkpoints; RESULTS=FILE keeps the runs' JSON lines.
set -euo pipefail

LAYERS=${1:-3}
shift || true
DIRS=("$@")
[[ ${#DIRS[@]} -gt 0 ]] || DIRS=(/tmp/gomerge-roundtrip /dev/shm/gomerge-roundtrip)
REPS=${REPS:-3}
OLD_REV=${OLD_REV:-1aef788}
OLD_REPS=${OLD_REPS:-1}
PY=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE" && git rev-parse --show-toplevel)
WORK=$(mktemp -d /tmp/gomerge-roundtrip-run.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RES=$WORK/results.jsonl
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

export PATH=$PATH:/usr/local/go/bin
(cd "$REPO" && go build -o "$WORK/gomerge" ./cmd/gomerge)
export GOMERGE_BIN=$WORK/gomerge
OLD_PY=
if [[ $OLD_REPS -gt 0 ]]; then
	OLD_PY=$WORK/gomerge_old.py
	git -C "$REPO" show "$OLD_REV:integrations/python/gomerge.py" >"$OLD_PY"
fi

# timed TOOL DIR CMD...: wall time, max RSS and CPU (user + system) from /usr/bin/time
# (a trainer reports its round trip's own CPU), plus the JSON the
# command prints (the trainer's phases), as one line of $RES.
timed() {
	local tool=$1 dir=$2
	shift 2
	/usr/bin/time -f '%e %M %U %S' -o "$WORK/time" "$@" >"$WORK/out"
	read -r wall rss user sys <"$WORK/time"
	local extra
	extra=$(tail -n 1 "$WORK/out")
	[[ $extra == "{"* ]] || extra='{}'
	"$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(tool=sys.argv[2], dir=sys.argv[3], wall_s=float(sys.argv[4]), process_peak_rss=int(sys.argv[5])*1024); d.setdefault("peak_rss", d["process_peak_rss"]); d.setdefault("cpu_s", float(sys.argv[6]) + float(sys.argv[7])); print(json.dumps(d))' \
		"$extra" "$tool" "$dir" "$wall" "$rss" "$user" "$sys" >>"$RES"
	log "$tool in $dir: ${wall}s, max RSS $((rss / 1024)) MiB"
}

SRC=
for d in "${DIRS[@]}"; do
	mkdir -p "$d"
	if [[ -z $SRC ]]; then
		log "preparing $LAYERS layers in $d"
		"$PY" "$HERE/roundtrip.py" prepare "$d" "$LAYERS"
		SRC=$d
	else
		cp "$SRC/anchor.safetensors" "$SRC/current.safetensors" "$d/"
	fi
	cat "$d/anchor.safetensors" "$d/current.safetensors" >/dev/null # warm cache for every run
	for r in $(seq "$REPS"); do
		timed "gomerge sfa --out" "$d" "$GOMERGE_BIN" sfa --anchor "$d/anchor.safetensors" \
			--current "$d/current.safetensors" --beta 0.5 --out "$d/out.safetensors" --json
		rm -f "$d/out.safetensors"
		# the first round checks the weights bit for bit; later rounds only time
		check=nocheck
		[[ $r == 1 ]] && check=check
		if [[ $(stat -f -c %T "$d") != tmpfs ]]; then
			ROUNDTRIP_STAGING=auto timed "round trip, staged in /dev/shm" "$d" "$PY" "$HERE/roundtrip.py" trainer "$d" staged $check
		fi
		timed "round trip" "$d" "$PY" "$HERE/roundtrip.py" trainer "$d" sync $check
		timed "round trip, sync_current=False" "$d" "$PY" "$HERE/roundtrip.py" trainer "$d" nosync $check
	done
	# the old version once, in the first folder (it takes minutes)
	[[ $d == "${DIRS[0]}" ]] || continue
	for r in $(seq "$OLD_REPS"); do
		timed "round trip (gomerge.py before)" "$d" "$PY" "$HERE/roundtrip.py" trainer "$d" sync check "$OLD_PY"
	done
done
[[ ${KEEP:-} == 1 ]] || for d in "${DIRS[@]}"; do rm -rf "$d"; done
echo
echo "LAYERS=$LAYERS REPS=$REPS, $(date -u +%Y-%m-%dT%H:%MZ), gomerge at $(git -C "$REPO" rev-parse --short HEAD), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
"$PY" "$HERE/roundtrip.py" table "$RES"
[[ -z ${RESULTS:-} ]] || cp "$RES" "$RESULTS"
