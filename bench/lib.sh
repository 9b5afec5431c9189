# Shared setup of the benchmarks on the generated fixtures (bench/compress.sh,
# bench/gmz_merge.sh, bench/report.sh), sourced, not run. The caller sets SIZE (1gb, 4gb or tiny) and WORK, and gets:
#
#   REPO       the repository's top folder; PATH includes Go
#   log MSG    a timestamped line on stderr
#   bench_fixtures [N]    makes (once) and sets FIX, A (anchor.safetensors),
#                         C (current.safetensors) and in_bytes (A's size); with N,
#                         FIX also holds model1..N.safetensors (other fine-tunes of
#                         the anchor, for bench/report.sh)
#   bench_outdir DEFAULT  sets OUTDIR (unless set) to DEFAULT under /dev/shm when
#                         it has room for four inputs, else WORK/DEFAULT; makes
#                         a fresh run folder O in it, removed on exit
#   bench_machine         prints the "## Machine" lines common to both tables

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && git rev-parse --show-toplevel)
export PATH="$PATH:/usr/local/go/bin"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bench_fixtures() {
	local models=${1:-0}
	mkdir -p "$WORK"
	WORK=$(cd "$WORK" && pwd)
	FIX=$WORK/fixtures-$SIZE
	A=$FIX/anchor.safetensors
	C=$FIX/current.safetensors
	if [[ ! -s $A || ! -s $C || ($models -gt 0 && ! -s $FIX/model$models.safetensors) ]]; then
		log "generating $SIZE fixtures (slow: Go RNG over every element)"
		rm -rf "$FIX.tmp"
		(cd "$REPO" && go run ./testdata/gen -out "$FIX.tmp" -config "$SIZE" -shards 0 -fisher=false -models "$models") >&2
		rm -rf "$FIX"
		mv "$FIX.tmp" "$FIX"
	fi
	in_bytes=$(stat -c %s "$A")
}

bench_outdir() {
	if [[ -z ${OUTDIR:-} ]]; then
		local shm_free
		shm_free=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {printf "%.0f", $4 * 1024}')
		if [[ -n $shm_free ]] && ((shm_free > 4 * in_bytes)); then OUTDIR=/dev/shm/$1; else OUTDIR=$WORK/$1; fi
	fi
	mkdir -p "$OUTDIR"
	O=$(mktemp -d "$OUTDIR/run.XXXXXX")
	trap 'rm -rf "$O"' EXIT
}

bench_machine() {
	echo "## Machine"
	echo
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "- $(go version | cut -d' ' -f3-); gomerge tree: $(cd "$REPO" && git rev-parse --short HEAD)"
}
