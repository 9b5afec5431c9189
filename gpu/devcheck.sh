#!/bin/sh
# devcheck.sh: gomerge's GPU checks, as one command.
#
#   gpu/devcheck.sh build   here (no GPU needed): build the test binary gpu/devcheck.test
#   gpu/devcheck.sh run     on the GPU machine, from the repository root, with that binary
#   gpu/devcheck.sh         both, on a machine with Go and a GPU
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
	echo "built $bin"
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

case "${1:-all}" in
build) build ;;
run) run ;;
all) build && run ;;
*) echo "usage: $0 [build|run|all]" >&2; exit 2 ;;
esac
