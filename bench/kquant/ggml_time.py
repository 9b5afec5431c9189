#!/usr/bin/python3
"""Time ggml's own reference K-quant quantizers, thread CPU time per element.

Usage: ggml_time.py LIBGGML_BASE INPUT TYPE...

INPUT is little-endian float32 (bench/kquant -data writes it), a multiple of 256
values. For each TYPE (q4_K, q6_K ...) it runs quantize_row_<TYPE>_ref over the whole
input three times and prints the thread CPU time per element, in the same form as
bench/kquant, and checks once that ggml_quantize_chunk (llama.cpp's entry point, one
row per block, no importance matrix) gives the same bytes. The output bytes' SHA-256
is printed so a run can be compared with gomerge's (bench/kquant_peer.sh does).
"""
import ctypes
import hashlib
import sys
import time

TYPES = {"q2_K": (10, 84), "q3_K": (11, 110), "q4_K": (12, 144), "q5_K": (13, 176), "q6_K": (14, 210)}
QK_K = 256


def main():
    lib_path, in_path, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    lib = ctypes.CDLL(lib_path)
    with open(in_path, "rb") as f:
        raw = f.read()
    n = len(raw) // 4
    if n == 0 or len(raw) % (4 * QK_K):
        sys.exit("input is not whole 256-value blocks")
    src = (ctypes.c_float * n).from_buffer_copy(raw)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    for name in names:
        typ, bb = TYPES[name]
        size = n // QK_K * bb
        dst = (ctypes.c_uint8 * size)()
        fn = getattr(lib, "quantize_row_%s_ref" % name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        t0 = time.thread_time_ns()
        for _ in range(3):
            fn(src, dst, n)
        t = (time.thread_time_ns() - t0) / 3
        chunk = (ctypes.c_uint8 * size)()
        got = lib.ggml_quantize_chunk(typ, src, chunk, 0, n // QK_K, QK_K, None)
        if got != size or bytes(chunk) != bytes(dst):
            sys.exit("%s: ggml_quantize_chunk disagrees with quantize_row_%s_ref" % (name, name))
        print("%s encode %.2f ns/elem (ggml quantize_row_%s_ref, thread CPU time) sha256 %s"
              % (name.upper(), t / n, name, hashlib.sha256(bytes(dst)).hexdigest()[:16]))


if __name__ == "__main__":
    main()
