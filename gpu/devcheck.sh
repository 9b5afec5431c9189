#!/bin/sh
# devcheck.sh: gomerge's GPU checks, as one command.
#
#   gpu/devcheck.sh build   here (no GPU needed): build the test binary gpu/devcheck.test
#                           and gpu/devcheck.bin/{gomerge,gen}
#   gpu/devcheck.sh run     on the GPU machine, from the repository root, with those
#                           binaries (carry gpu/devcheck.test and gpu/devcheck.bin)
#   gpu/devcheck.sh e2e     there: the CLI's merges with --device cuda against --device
#                           cpu on generated fixtures, and the trainer's CUDA round trip
#   gpu/devcheck.sh         build, run and e2e, on a machine with Go and a GPU
#
# run: prints the device, checks kernels.ptx with ptxas where the CUDA toolkit is
# installed, runs the differential tests on the real device (GOMERGE_TEST_GPU=1: a
# missing device is a failure), the benchmarks (host<->device copies, kernels, SFA end
# to end) and the end-to-end TIES comparison with the CPU path on GOMERGE_TIES_BYTES
# (default 4e9) of BF16. It takes under five minutes on an H100/H200-class machine.
set -eu
cd "$(dirname "$0")/.."
bin=gpu/devcheck.test

build() {
	go test -c -o "$bin" ./gpu
	go build -o gpu/devcheck.bin/gomerge ./cmd/gomerge
	go build -o gpu/devcheck.bin/gen ./testdata/gen
	echo "built $bin and gpu/devcheck.bin"
}

run() {
	[ -x "$bin" ] || { echo "devcheck: $bin missing: run 'gpu/devcheck.sh build' first" >&2; exit 2; }
	command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv || true
	if command -v ptxas >/dev/null; then
		for arch in sm_80 sm_90; do
			ptxas -arch="$arch" -o /dev/null gpu/kernels.ptx && echo "ptxas $arch: ok"
		done
	else
		echo "ptxas not installed: the driver's JIT compiles kernels.ptx in the tests below"
	fi
	tmp=${GOMERGE_TMP:-}
	[ -z "$tmp" ] && [ -d /dev/shm ] && tmp=/dev/shm
	cd gpu # the test binary reads testdata/ and kernels.ptx relative to its package
	status=0
	GOMERGE_TEST_GPU=1 "../$bin" -test.v -test.count=1 -test.timeout=4m \
		-test.run '^(TestDevice|TestPTXLint)$' || status=1
	GOMERGE_TEST_GPU=1 "../$bin" -test.count=1 -test.timeout=3m -test.run '^$' \
		-test.bench 'Device' -test.benchtime 5x || status=1
	GOMERGE_TEST_GPU=1 GOMERGE_TIES_BYTES=${GOMERGE_TIES_BYTES:-4000000000} GOMERGE_TMP="$tmp" \
		"../$bin" -test.v -test.count=1 -test.timeout=5m -test.run '^TestDeviceTIESLarge$' || status=1
	[ "$status" = 0 ] && echo "devcheck: all passed" || echo "devcheck: FAILED (see above)"
	return "$status"
}

# e2e: every GPU-capable merge of the command line on GOMERGE_E2E_CONFIG (default 1gb)
# llama-shaped BF16 fixtures, with --device cpu, auto (the calibration of the
# method's kernel decides) and cuda (every tensor the GPU can take), each timed; the cuda output is
# compared with the cpu one byte for byte (the fixtures hold no NaN, so not even a NaN
# payload may differ); slerp, which has no device kernel, shows what auto costs a merge
# with nothing for the GPU. Then the Python integration's CUDA test (GOMERGE_REQUIRE_CUDA=1:
# a missing device fails) and the trainer's round trip with the live weights on the GPU
# (bench/roundtrip, ROUNDTRIP_DEVICE=cuda), beside `gomerge sfa --out` alone, unless
# GOMERGE_E2E_MERGES_ONLY=1.
e2e() {
	gm=$PWD/gpu/devcheck.bin/gomerge
	[ -x "$gm" ] || { echo "devcheck: $gm missing: run 'gpu/devcheck.sh build' first" >&2; exit 2; }
	tmp=${GOMERGE_TMP:-}
	[ -z "$tmp" ] && [ -d /dev/shm ] && tmp=/dev/shm
	fx=${tmp:-/tmp}/gomerge-e2e
	rm -rf "$fx"
	t=$(date +%s.%N)
	gpu/devcheck.bin/gen -out "$fx" -config "${GOMERGE_E2E_CONFIG:-1gb}" -shards 0 -fisher=true -models 3 >/dev/null
	echo "e2e: fixtures in $(awk "BEGIN { print $(date +%s.%N) - $t }") s: $(du -sh "$fx" | cut -f1)"
	B=$fx/anchor.safetensors C=$fx/current.safetensors F=$fx/fisher.safetensors
	M1=$fx/model1.safetensors M2=$fx/model2.safetensors M3=$fx/model3.safetensors
	min=${GOMERGE_GPU_MIN_ELEMS:+--gpu-min-elems $GOMERGE_GPU_MIN_ELEMS}
	status=0
	while IFS='|' read -r name args; do
		[ -n "$name" ] || continue
		line="e2e: $name:"
		for dev in cpu auto cuda; do
			t=$(date +%s.%N)
			# shellcheck disable=SC2086 # the rows' fields are space-separated on purpose
			"$gm" $args --device $dev $min --json --out "$fx/$dev.safetensors" >"$fx/$dev.json" || { echo "e2e: $name --device $dev FAILED"; status=1; }
			line="$line $dev $(awk "BEGIN { printf \"%.2f\", $(date +%s.%N) - $t }") s"
		done
		if cmp -s "$fx/cpu.safetensors" "$fx/cuda.safetensors"; then same=same; else same=DIFFER; status=1; fi
		echo "$line; cuda $same bytes as cpu; $(python3 -c 'import json, sys
for p in sys.argv[1:]:
    r = json.load(open(p)); g = r.get("gpu") or {}; c = g.get("calibration") or {}
    print("%s: device=%s gpu_tensors=%s/%s to_device=%s%s;" % (p.rsplit("/", 1)[1][:-5], r.get("device"), g.get("tensors"), r.get("tensors_merged"),
          g.get("bytes_to_device"), " calibration cpu %.4f s gpu %.4f s (all %.3f s, gpu warm-up %.3f s); open %.3f s" % (c["cpu_seconds"], c["gpu_seconds"],
          c.get("seconds", 0), c.get("gpu_warmup_seconds", 0), g.get("open_seconds", 0)) if c else ""), end=" ")' "$fx/auto.json" "$fx/cuda.json")"
		rm -f "$fx"/*.safetensors.tmp* "$fx/cpu.safetensors" "$fx/auto.safetensors" "$fx/cuda.safetensors"
	done <<-ROWS
		sfa|sfa --anchor $B --current $C --beta 0.5
		linear|linear $M1 $M2 $M3
		task_arithmetic|task-arithmetic --base $B $M1 $M2 $M3
		task_arithmetic_1|task-arithmetic --base $B $M1
		fisher|fisher $B:fisher=$F $C:fisher=$F
		ties|ties --base $B $M1 $M2 $M3 --density 0.2
		breadcrumbs|breadcrumbs --base $B $M1 $M2 $M3 --density 0.9 --gamma 0.01
		breadcrumbs_ties|breadcrumbs --ties --base $B $M1 $M2 $M3 --density 0.9 --gamma 0.01
		dare_linear|dare --base $B $M1 $M2 $M3 --density 0.2 --seed 7
		dare_ties|dare --ties --base $B $M1 $M2 $M3 --density 0.2 --seed 7
		slerp|slerp --base $B $M1 --t 0.3
	ROWS
	for dev in cpu cuda; do
		"$gm" distance "$B" "$C" --base "$M1" --json --device "$dev" $min >"$fx/dist.$dev.json" || status=1
	done
	python3 -c 'import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
print("e2e: distance: device=%s, gpu_tensors=%s" % (b.get("device"), (b.get("gpu") or {}).get("tensors")))
for r in a, b:
    for k in "seconds", "device", "gpu":
        r.pop(k, None)
sys.exit("e2e: distance: DIFFER\n%s\n%s" % (a, b) if a != b else print("e2e: distance: same sums"))' "$fx/dist.cpu.json" "$fx/dist.cuda.json" || status=1
	rm -rf "$fx"
	if [ "${GOMERGE_E2E_MERGES_ONLY:-0}" = 1 ]; then
		[ "$status" = 0 ] && echo "devcheck e2e (merges only): all passed" || echo "devcheck e2e (merges only): FAILED (see above)"
		return "$status"
	fi
	(cd integrations/python && GOMERGE_BIN=$gm GOMERGE_REQUIRE_CUDA=1 python3 -m unittest -v test_gomerge.ZeroCopyTest.test_cuda_tensors) || status=1
	rt=${tmp:-/tmp}/gomerge-roundtrip
	python3 bench/roundtrip/roundtrip.py prepare "$rt" "${GOMERGE_RT_LAYERS:-7}" || status=1
	for i in 1 2 3; do
		t=$(date +%s.%N)
		"$gm" sfa --anchor "$rt/anchor.safetensors" --current "$rt/current.safetensors" --beta 0.5 --device cpu --out "$rt/alone.safetensors" >/dev/null || status=1
		echo "e2e: gomerge sfa --out alone: $(awk "BEGIN { print $(date +%s.%N) - $t }") s"
		rm -f "$rt/alone.safetensors"
		GOMERGE_BIN=$gm ROUNDTRIP_DEVICE=cuda python3 bench/roundtrip/roundtrip.py trainer "$rt" sync check || status=1
	done
	rm -rf "$rt"
	[ "$status" = 0 ] && echo "devcheck e2e: all passed" || echo "devcheck e2e: FAILED (see above)"
	return "$status"
}

case "${1:-all}" in
build) build ;;
run) run ;;
e2e) e2e ;;
all) build && run && e2e ;;
*) echo "usage: $0 [build|run|e2e|all]" >&2; exit 2 ;;
esac
