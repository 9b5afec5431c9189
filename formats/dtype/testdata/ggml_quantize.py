#!/usr/bin/python3
"""Quantize float32 blocks with ggml's own K-quant reference quantizers.

Usage: ggml_quantize.py LIBGGML_BASE INPUT OUTPUT [--imatrix=WEIGHTS] TYPE...

INPUT is little-endian float32, a multiple of 256 values. For each TYPE (q2_K ...
q6_K), in order, OUTPUT receives the bytes of quantize_row_<TYPE>_ref over the whole
input. The script also runs ggml_quantize_chunk (the entry point llama.cpp's
quantizer uses) without an importance matrix and fails if it disagrees, so the
reference functions are the ones that matter for real model files.

With --imatrix=WEIGHTS (little-endian float32, one importance weight per column, a
multiple of 256 of them), INPUT is rows of that many columns and OUTPUT receives
ggml_quantize_chunk's bytes with those weights: the quantize_row_<TYPE>_impl path
llama.cpp takes when given an importance matrix.

gomerge's Go tests (formats/dtype, kquant_test.go) run this through /usr/bin/python3
with the libggml-base.so shipped in node-llama-cpp's prebuilt binary; it uses only
the standard library (ctypes).
"""
import ctypes
import sys

# ggml_type numbers and bytes per 256-element block (ggml.h, ggml-common.h).
TYPES = {"q2_K": (10, 84), "q3_K": (11, 110), "q4_K": (12, 144), "q5_K": (13, 176), "q6_K": (14, 210)}
QK_K = 256


def main():
    lib_path, in_path, out_path, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    imatrix = None
    if names and names[0].startswith("--imatrix="):
        with open(names[0][len("--imatrix="):], "rb") as f:
            imatrix = f.read()
        names = names[1:]
    lib = ctypes.CDLL(lib_path)
    with open(in_path, "rb") as f:
        raw = f.read()
    if len(raw) % (4 * QK_K):
        sys.exit("input is not whole 256-value blocks")
    n = len(raw) // 4
    src = (ctypes.c_float * n).from_buffer_copy(raw)
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    out = bytearray()
    if imatrix is not None:
        row = len(imatrix) // 4
        if row == 0 or row % QK_K or n % row:
            sys.exit("the importance weights are not whole blocks dividing the input into rows")
        qw = (ctypes.c_float * row).from_buffer_copy(imatrix)
        for name in names:
            typ, bb = TYPES[name]
            size = n // QK_K * bb
            dst = (ctypes.c_uint8 * size)()
            got = lib.ggml_quantize_chunk(typ, src, dst, 0, n // row, row, qw)
            if got != size:
                sys.exit("%s: ggml_quantize_chunk wrote %d bytes, want %d" % (name, got, size))
            out += bytes(dst)
        with open(out_path, "wb") as f:
            f.write(out)
        return
    for name in names:
        typ, bb = TYPES[name]
        size = n // QK_K * bb
        dst = (ctypes.c_uint8 * size)()
        fn = getattr(lib, "quantize_row_%s_ref" % name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn(src, dst, n)
        # One row per block: ggml_quantize_chunk quantizes row by row.
        chunk = (ctypes.c_uint8 * size)()
        got = lib.ggml_quantize_chunk(typ, src, chunk, 0, n // QK_K, QK_K, None)
        if got != size or bytes(chunk) != bytes(dst):
            sys.exit("%s: ggml_quantize_chunk disagrees with quantize_row_%s_ref" % (name, name))
        out += bytes(dst)
    with open(out_path, "wb") as f:
        f.write(out)


if __name__ == "__main__":
    main()
