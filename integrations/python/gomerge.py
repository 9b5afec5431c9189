"""Call gomerge from a Python training loop: Sequential Fine-tuning with Averaging (SFA).

Standard library only. torch is imported lazily, and only by the helpers that convert
torch tensors; the Hugging Face, Lightning and Composer adapters import their framework
only when you build one.

While training on a new task for T steps, every max(1, floor(p*T)) steps and at step T
the weights are replaced by  beta*theta_anchor + (1-beta)*theta_current,  theta_anchor
being the model that finished the previous task. The trainer saves its weights (by
default to a private folder in /dev/shm), runs ``gomerge sfa --json``, which writes the
merge to the checkpoint file `current` (fsynced, renamed), and loads the result back;
the merge at step T is the next task's anchor. Without room in /dev/shm the weights
are saved to `current` and merged in place (``--in-place``); the outcome is the same.

    save_weights(model, "ckpt/task_A.safetensors")   # after task A
    sfa = SFA(anchor="ckpt/task_A.safetensors", current="ckpt/current.safetensors",
              steps=T, p=0.1, beta=0.5)
    for step in range(1, T + 1):
        loss = ...; loss.backward(); opt.step(); opt.zero_grad()
        sfa.maybe_average(model, step)     # at the steps of sfa.schedule
    sfa.finish_task()                      # ckpt/current becomes the next anchor

The round trip costs little more than the merge: tensors are written straight from
their memory (no copies in Python) to RAM, gomerge's writer does the one durable write,
and the merged file is read straight into the live parameters (load_into), so memory
stays near the model's size.

Under torch.distributed, SFA merges once per averaging step for the whole job (rank 0
saves and merges, every rank loads); ContinualRun rolls the anchor over a sequence of
tasks and resumes from its folder after a crash at any point. docs/trainer.md has the
measurements and the protocol.

Errors: a non-zero exit of gomerge raises GomergeError, which carries the exit status
(2 usage, 3 bad input, 4 I/O failure, 1 anything else), gomerge's message and the
command line. A failed merge leaves the checkpoint file unchanged, so training can go
on from the weights still in memory.
"""

import hashlib
import json
import math
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

__all__ = [
    "GomergeError", "SFA", "ContinualRun", "Tensor", "schedule", "run", "save_file", "load_file",
    "save_state_dict", "load_state_dict", "load_into", "save_weights", "float_tensors", "hf_callback", "lightning_callback",
    "composer_callback",
]

EXIT_MEANING = {1: "failure", 2: "usage error", 3: "bad input", 4: "I/O failure"}


class GomergeError(RuntimeError):
    """gomerge exited non-zero (or could not be run: exit_status is None then)."""

    def __init__(self, argv, exit_status, message, stderr=""):
        self.argv = list(argv)
        self.exit_status = exit_status
        self.message = message
        self.stderr = stderr
        what = EXIT_MEANING.get(exit_status, "could not run") if exit_status is not None else "could not run"
        super().__init__("%s (exit status %s, %s): %s" % (" ".join(self.argv), exit_status, what, message))


def find_binary(binary=None):
    """The gomerge executable: the argument, else $GOMERGE_BIN, else gomerge on PATH."""
    b = binary or os.environ.get("GOMERGE_BIN") or shutil.which("gomerge")
    if not b:
        raise GomergeError(["gomerge"], None, "gomerge not found: pass binary=, set GOMERGE_BIN or put it on PATH")
    return b


DEVICES = ("cpu", "auto", "cuda")


def _check_device(device):
    """gomerge's --device for a trainer's merges; see SFA's device."""
    if device not in DEVICES:
        raise ValueError("device must be one of %s, got %r" % (", ".join(DEVICES), device))
    return device


def run(args, binary=None, timeout=None):
    """Run ``gomerge ARGS --json`` and return the decoded JSON report.

    Raises GomergeError on a non-zero exit, with gomerge's own message (from the JSON
    error object it prints on stdout, or from stderr).
    """
    argv = [find_binary(binary)] + list(args)
    if "--json" not in argv:
        argv.append("--json")
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except FileNotFoundError as e:
        raise GomergeError(argv, None, "cannot execute %s: %s" % (argv[0], e)) from e
    except subprocess.TimeoutExpired as e:
        raise GomergeError(argv, None, "timed out after %ss" % timeout) from e
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        msg = err
        try:
            obj = json.loads(out)
            if isinstance(obj, dict) and obj.get("error"):
                msg = obj["error"]
        except ValueError:
            pass
        raise GomergeError(argv, proc.returncode, msg, err)
    try:
        return json.loads(out)
    except ValueError as e:
        raise GomergeError(argv, 0, "unreadable JSON report %r: %s" % (out[:200], e), err) from e


def schedule(steps, p):
    """The steps (1-based) at which to average: every max(1, floor(p*steps)), and steps.

    The same rule as ``gomerge sfa schedule``, computed here so a trainer needs no
    process for it.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError("steps must be a positive int, got %r" % (steps,))
    if not (0 < p <= 1):
        raise ValueError("p must be in (0, 1], got %r" % (p,))
    every = max(1, int(math.floor(p * steps)))
    out = list(range(every, steps + 1, every))
    if out[-1] != steps:
        out.append(steps)
    return out


# --- safetensors: 8-byte little-endian header length, JSON header, raw data --------

_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
_MAX_HEADER = 100_000_000


class Tensor:
    """A tensor as stored: dtype name (e.g. "F32"), shape and little-endian bytes."""

    __slots__ = ("dtype", "shape", "data")

    def __init__(self, dtype, shape, data):
        if dtype not in _SIZES:
            raise ValueError("unsupported dtype %r" % (dtype,))
        n = 1
        for d in shape:
            n *= d
        if n * _SIZES[dtype] != len(data):
            raise ValueError("%s%s needs %d bytes, got %d" % (dtype, list(shape), n * _SIZES[dtype], len(data)))
        self.dtype, self.shape, self.data = dtype, tuple(shape), bytes(data)

    def __eq__(self, other):
        return isinstance(other, Tensor) and (self.dtype, self.shape, self.data) == (other.dtype, other.shape, other.data)

    def __repr__(self):
        return "Tensor(%s, %s)" % (self.dtype, list(self.shape))


def save_file(tensors, path, metadata=None):
    """Write a {name: Tensor} dict as one safetensors file, atomically.

    The data goes to a temporary file in the same folder, is fsynced, then renamed over
    path, so gomerge (or a crash) never sees half a file. Tensors are laid out in the
    dict's order; "format": "pt" is added to the metadata (transformers requires it).
    """
    items = []
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError("tensor %r is a %s, not a gomerge.Tensor (use save_state_dict for torch)" % (name, type(t).__name__))
        items.append((name, t.dtype, t.shape, memoryview(t.data)))
    _write_safetensors(path, items, metadata)


def _header_bytes(items, metadata):
    """The 8-byte length and the JSON header of a safetensors file holding items, a
    list of (name, dtype, shape, buffer) laid out in that order."""
    meta = {"format": "pt"}
    meta.update(metadata or {})
    header = {"__metadata__": {str(k): str(v) for k, v in meta.items()}}
    off = 0
    for name, dtype, shape, buf in items:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + buf.nbytes]}
        off += buf.nbytes
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * (-len(hdr) % 8)  # the data section starts 8-byte aligned
    return struct.pack("<Q", len(hdr)) + hdr


def _write_safetensors(path, items, metadata, fsync=True):
    """Write items (name, dtype, shape, buffer) as one safetensors file, atomically.

    Each buffer is handed to write() as it is (a memoryview of the tensor's own memory),
    so the only copy is the kernel's into the page cache."""
    if sys.byteorder != "little":
        raise RuntimeError("safetensors data is little-endian; this host is not")
    head = _header_bytes(items, metadata)

    def write(f):
        f.write(head)
        for _, _, _, buf in items:
            if buf.nbytes:
                f.write(buf)

    _write_atomically(path, write, fsync)


def _write_atomically(path, write, fsync=True):
    """Write a file through a temporary file beside it, fsynced and renamed over path,
    so that a reader (or a crash) sees the old file or the complete new one.

    fsync=False still renames a complete file into place (a running reader never sees
    half of it) but leaves writeback to the kernel: for scratch files that are read at
    once and never trusted after a machine crash (SFA's current before a merge)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        if hasattr(os, "fchmod"):
            # mkstemp makes 0600; a checkpoint gets the mode of the file it replaces,
            # else what the umask gives a new file (as gomerge's own outputs do)
            os.fchmod(fd, _new_file_mode(path))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask():
    """The process's umask, read without changing it where Linux tells it."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    m = os.umask(0o022)  # elsewhere: read by setting (briefly process-wide)
    os.umask(m)
    return m


def _new_file_mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _fsync_dir(path):
    """Make a rename in folder path durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Mapped:
    """A safetensors file mapped read-only (copy-on-write, so torch.frombuffer gets the
    writable buffer it wants; nothing writes to it), with its validated header.

    entries: {name: (dtype, shape, begin, end)}, begin and end absolute file offsets.
    """

    def __init__(self, path):
        self.path = path
        self._f = open(path, "rb")
        try:
            size = os.fstat(self._f.fileno()).st_size
            if size < 8:
                raise ValueError("%s: %d bytes, too short for a safetensors file" % (path, size))
            (n,) = struct.unpack("<Q", self._f.read(8))
            if n > _MAX_HEADER or 8 + n > size:
                raise ValueError("%s: header length %d does not fit the file (%d bytes)" % (path, n, size))
            header = json.loads(self._f.read(n).decode("utf-8"))
            self.metadata = header.pop("__metadata__", {}) or {}
            start = 8 + n
            self.entries = {}
            for name, info in header.items():
                dtype, shape = info.get("dtype"), info.get("shape")
                if dtype not in _SIZES:
                    raise ValueError("%s: tensor %r has unsupported dtype %r" % (path, name, dtype))
                b, e = info["data_offsets"]
                if not (0 <= b <= e <= size - start):
                    raise ValueError("%s: tensor %r has offsets [%d, %d] outside the data (%d bytes)" % (path, name, b, e, size - start))
                count = 1
                for d in shape:
                    count *= d
                if count * _SIZES[dtype] != e - b:
                    raise ValueError("%s: tensor %r: %s%s needs %d bytes, has %d" % (path, name, dtype, list(shape), count * _SIZES[dtype], e - b))
                self.entries[name] = (dtype, tuple(shape), start + b, start + e)
            self.mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
        except BaseException:
            self._f.close()
            raise

    def bytes(self, name):
        _, _, b, e = self.entries[name]
        return self.mm[b:e]

    def torch(self, name):
        """The tensor as a torch view of the mapping (valid until release/close)."""
        import torch
        dtype, shape, b, e = self.entries[name]
        dt = _torch_from_name()[dtype]
        if e == b:
            return torch.empty(shape, dtype=dt)
        return torch.frombuffer(self.mm, dtype=torch.uint8, offset=b, count=e - b).view(dt).reshape(shape)

    def copy_to(self, name, dst):
        """Copy a tensor of the file into torch tensor dst (same shape).

        A contiguous CPU destination of the file's dtype is read into directly, page
        cache to parameter in one copy; anything else (CUDA, another dtype, strided)
        gets copy_ from the mapping, a single host-to-device copy for CUDA."""
        import torch
        dtype, _, b, e = self.entries[name]
        if e == b:
            return
        if dst.device.type == "cpu" and dst.is_contiguous() and _torch_dtypes().get(dst.dtype) == dtype:
            raw = dst.detach()
            if raw.dtype == torch.bfloat16:
                raw = raw.view(torch.int16)
            _pread_exact(self._f.fileno(), memoryview(raw.numpy().reshape(-1).view("u1")), b, self.path, name)
            return
        src = self.torch(name)
        dst.copy_(src)
        del src
        self.release(name)

    def release(self, name):
        """Drop the mapped pages of a tensor already copied out, so that loading a model
        keeps about one tensor of the file resident instead of the whole file."""
        _, _, b, e = self.entries[name]
        page = mmap.PAGESIZE
        lo, hi = -(-b // page) * page, e // page * page
        if hi > lo and hasattr(self.mm, "madvise"):
            self.mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def close(self):
        if self.mm is not None:
            self.mm.close()
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _pread_exact(fd, mv, off, path, name):
    while mv.nbytes:
        n = os.preadv(fd, [mv], off)
        if n <= 0:
            raise ValueError("%s: tensor %r: file ended at offset %d" % (path, name, off))
        mv, off = mv[n:], off + n


def _is_folder(path):
    """A path that does not end in .safetensors names a Hugging Face folder (gomerge's rule)."""
    return not path.lower().endswith(".safetensors")


def _files_of(path):
    """The safetensors files of a checkpoint: the file itself, or a folder's shards (from
    model.safetensors.index.json, else every *.safetensors in it)."""
    if not _is_folder(path):
        return [path]
    idx = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx, "rb") as f:
            weight_map = json.load(f).get("weight_map", {})
        names = sorted(set(weight_map.values()))
        for n in names:
            if os.path.basename(n) != n:
                raise ValueError("%s: shard name %r is not a plain file name" % (idx, n))
    else:
        names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors") and not n.startswith("."))
    if not names:
        raise ValueError("%s: no safetensors files in the folder" % path)
    return [os.path.join(path, n) for n in names]


def load_file(path):
    """Read a safetensors file into (dict of name -> Tensor, metadata dict)."""
    with _Mapped(path) as m:
        out = {}
        for name in sorted(m.entries, key=lambda k: m.entries[k][2]):
            dtype, shape, _, _ = m.entries[name]
            out[name] = Tensor(dtype, shape, m.bytes(name))
        return out, dict(m.metadata)


# --- torch conversion (torch imported only here) -------------------------------------

def _torch_dtypes():
    import torch
    return {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
            torch.uint8: "U8", torch.bool: "BOOL"}


def _torch_from_name():
    return {v: k for k, v in _torch_dtypes().items()}


def _host_bytes(t):
    """(dtype name, shape, memoryview of the bytes, owner) of a torch tensor, without a
    copy for a contiguous CPU tensor; a CUDA or strided tensor is copied once to a
    contiguous host tensor. owner must outlive the memoryview."""
    import torch
    names = _torch_dtypes()
    if t.dtype not in names:
        raise TypeError("cannot store torch dtype %s in safetensors" % t.dtype)
    c = t.detach()
    if c.device.type != "cpu":
        c = c.to("cpu")
    c = c.contiguous()
    # numpy has no bfloat16: hand its bits over as int16.
    raw = c.view(torch.int16) if c.dtype == torch.bfloat16 else c
    arr = raw.numpy().reshape(-1).view("u1")
    return names[t.dtype], tuple(c.shape), memoryview(arr), c


def to_tensor(t):
    """A torch tensor as a gomerge.Tensor (copied to the CPU)."""
    dtype, shape, mv, _ = _host_bytes(t)
    return Tensor(dtype, shape, mv)


def from_tensor(t):
    """A gomerge.Tensor as a new CPU torch tensor."""
    import torch
    dt = _torch_from_name()[t.dtype]
    if len(t.data) == 0:
        return torch.empty(t.shape, dtype=dt)
    return torch.frombuffer(bytearray(t.data), dtype=dt).reshape(t.shape)


def _alias_key(t):
    # Two entries are one tensor (tied weights) when they view the same memory the same
    # way; partial overlaps are saved in full, each as its own tensor.
    return (t.device, t.dtype, t.data_ptr(), tuple(t.shape), tuple(t.stride())) if t.numel() else None


def _dedup(state_dict):
    """(unique, aliases): the entries with tied weights saved once, under the first name
    in the dict's order (the name Hugging Face keeps in the usual case), and
    {alias: kept name} for the rest."""
    unique, aliases, seen = {}, {}, {}
    for name, t in state_dict.items():
        k = _alias_key(t)
        if k is not None and k in seen:
            aliases[name] = seen[k]
            continue
        if k is not None:
            seen[k] = name
        unique[name] = t
    return unique, aliases


_ALIASES_KEY = "gomerge.aliases"
DEFAULT_SHARD_BYTES = 5 * 10 ** 9


def save_state_dict(state_dict, path, metadata=None, shard_bytes=DEFAULT_SHARD_BYTES, fsync=True):
    """Write a torch state_dict as safetensors, straight from the tensors' memory.

    Tied weights (entries viewing the same memory) are written once, under the first
    name, and the others are listed in the metadata key "gomerge.aliases" (safetensors
    has no aliasing; Hugging Face drops the tied copies the same way). A CUDA tensor is
    copied once to the host. path ending in .safetensors is one file; anything else is a
    Hugging Face folder: model.safetensors, or shards of at most shard_bytes and
    model.safetensors.index.json (each file written atomically, the index last).
    fsync=False skips the fsync (see _write_atomically): the file is complete for any
    reader, but not yet durable."""
    unique, aliases = _dedup(state_dict)
    meta = dict(metadata or {})
    if aliases:
        meta[_ALIASES_KEY] = json.dumps(aliases, sort_keys=True, separators=(",", ":"))
    items, owners = [], []
    for name, t in unique.items():
        dtype, shape, mv, owner = _host_bytes(t)
        items.append((name, dtype, shape, mv))
        owners.append(owner)
    if not _is_folder(path):
        _write_safetensors(path, items, meta, fsync)
        return
    _write_folder(path, items, meta, shard_bytes, fsync)


def _write_folder(path, items, meta, shard_bytes, fsync):
    os.makedirs(path, exist_ok=True)
    shards, cur, size = [], [], 0
    for it in items:
        if cur and size + it[3].nbytes > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(it)
        size += it[3].nbytes
    shards.append(cur)
    idx = os.path.join(path, "model.safetensors.index.json")
    old = set()
    if os.path.exists(idx):
        old = set(os.path.basename(f) for f in _files_of(path))
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = ["model-%05d-of-%05d.safetensors" % (i + 1, len(shards)) for i in range(len(shards))]
    for n, sh in zip(names, shards):
        _write_safetensors(os.path.join(path, n), sh, meta, fsync)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(it[3].nbytes for it in items)},
                 "weight_map": {it[0]: n for n, sh in zip(names, shards) for it in sh}}
        body = json.dumps(index, indent=2, sort_keys=True).encode("utf-8")
        _write_atomically(idx, lambda f: f.write(body), fsync)
    elif os.path.exists(idx):
        os.unlink(idx)
    for n in old - set(names):
        try:
            os.unlink(os.path.join(path, n))
        except FileNotFoundError:
            pass
    if fsync:
        _fsync_dir(path)


def _read_aliases(metadata, where):
    raw = metadata.get(_ALIASES_KEY)
    if not raw:
        return {}
    try:
        al = json.loads(raw)
    except ValueError as e:
        raise ValueError("%s: metadata %s is not JSON: %s" % (where, _ALIASES_KEY, e)) from e
    if not isinstance(al, dict):
        raise ValueError("%s: metadata %s is not an object" % (where, _ALIASES_KEY))
    return al


def load_into(state_dict, path, strict=True):
    """Copy the tensors of a checkpoint (file or folder) into the tensors of state_dict
    (a model's state_dict(), or the model), in place: parameters stay the same objects,
    on their own device and dtype.

    A contiguous CPU tensor of the file's dtype is read straight into its memory (one
    copy, from the page cache); any other (CUDA, strided, another dtype) gets copy_ from
    the memory-mapped file (one host-to-device copy for CUDA), whose pages are dropped
    once copied. Either way no copy of the model is held, so peak memory stays near the
    model's size. Tied weights are copied once. Names and shapes are
    checked before anything is copied: with strict, every entry of state_dict must be in
    the checkpoint (or be an alias of one that is). Returns the names copied."""
    import torch
    sd = state_dict.state_dict() if hasattr(state_dict, "state_dict") else state_dict
    unique, aliases = _dedup(sd)
    maps = []
    try:
        for fp in _files_of(path):
            maps.append(_Mapped(fp))
        where = {}
        for m in maps:
            for name, (dtype, shape, _, _) in m.entries.items():
                dst = unique.get(name)
                if dst is None:
                    continue
                if tuple(dst.shape) != shape:
                    raise ValueError("%s: tensor %r has shape %s, the model's is %s" % (m.path, name, list(shape), list(dst.shape)))
                where[name] = m
        if strict:
            missing = [n for n in unique if n not in where]
            if missing:
                raise ValueError("%s: lacks tensor(s) %s" % (path, ", ".join(repr(n) for n in missing[:5])))
        with torch.no_grad():
            for m in maps:
                for name in sorted(m.entries, key=lambda k: m.entries[k][2]):
                    if where.get(name) is not m:
                        continue
                    m.copy_to(name, unique[name])
    finally:
        for m in maps:
            m.close()
    return list(where) + [a for a, k in aliases.items() if k in where]


def float_tensors(state_dict):
    """The floating-point entries of a state_dict: what SFA averages.

    Integer and bool buffers (BatchNorm's num_batches_tracked, step counters) are the
    trainer's: gomerge would require them byte-equal in the anchor and the current
    model, which a counter never is.
    """
    return {k: v for k, v in state_dict.items() if v.is_floating_point()}


def save_weights(model_or_state_dict, path, metadata=None):
    """Save the floating-point tensors of a model (or state_dict): the anchor format
    that SFA.average_state_dict writes too."""
    sd = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") else model_or_state_dict
    save_state_dict(float_tensors(sd), path, metadata)


def load_state_dict(path):
    """Read a safetensors file (or Hugging Face folder) as a {name: torch.Tensor} dict on
    the CPU, each tensor read once from the file into its own memory. Tied weights listed in the
    metadata come back as one tensor under each name."""
    import torch
    out = {}
    for fp in _files_of(path):
        with _Mapped(fp) as m:
            for name in sorted(m.entries, key=lambda k: m.entries[k][2]):
                dtype, shape, _, _ = m.entries[name]
                t = torch.empty(shape, dtype=_torch_from_name()[dtype])
                m.copy_to(name, t)
                out[name] = t
            for alias, name in _read_aliases(m.metadata, fp).items():
                if name in out:
                    out[alias] = out[name]
    return out


# --- RAM staging of the weights saved before a merge ----------------------------------
#
# On a disk, writing the model from Python costs more than gomerge's whole merge
# (bench/roundtrip): gomerge writes through a mapping with fallocate and starts the
# writeback while it writes, Python's write() does neither. So the weights go to a RAM
# folder (a memory copy), gomerge reads them there and writes the merge to `current` on
# the disk, fsynced and renamed as always: one durable write per step, done by the
# faster writer.

_STAGE_PREFIX = "gomerge-stage-"
_DEFAULT_STAGING = "/dev/shm"
_RAM_FS = ("tmpfs", "ramfs")
_INDEX = "model.safetensors.index.json"


def _existing(path):
    """path, or its nearest ancestor that exists."""
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return p


def _unescape_mount(s):
    # /proc/self/mounts writes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _fs_type(path):
    """The type of the filesystem holding path ("tmpfs", "ext4", ...), from
    /proc/self/mounts; None where that is not readable (not Linux)."""
    try:
        with open("/proc/self/mounts", "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    p = os.path.realpath(_existing(path))
    best, kind = -1, None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = _unescape_mount(parts[1])
        inside = p == mnt or p.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= best:  # a later mount on the same point hides the earlier
            best, kind = len(mnt), parts[2]
    return kind


def _free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _mem_available():
    """MemAvailable from /proc/meminfo in bytes, None where unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _weights_bytes(weights):
    """The bytes a save of weights writes: each tied tensor once, plus room for the
    headers."""
    unique, _ = _dedup(weights)
    return sum(t.numel() * t.element_size() for t in unique.values()) + (1 << 20)


def _staging_dir(staging, target, need):
    """(folder, None) where the weights (need bytes) are staged before a merge whose
    output is target, or (None, why not). staging is "auto" (/dev/shm, when target is
    not already on a RAM filesystem), None/False (never) or a folder the caller chose
    (used whatever its filesystem). Either way the folder must hold need bytes with a
    margin, and a RAM folder must also fit in the memory still available."""
    if staging is None or staging is False:
        return None, "staging off"
    if staging == "auto":
        d = _DEFAULT_STAGING
        if not os.path.isdir(d):
            return None, "no %s" % d
        if _fs_type(target) in _RAM_FS:
            return None, "%s is already on a RAM filesystem" % target
        try:
            if os.stat(d).st_dev == os.stat(_existing(target)).st_dev:
                return None, "%s and %s are one filesystem" % (d, target)
        except OSError as e:
            return None, str(e)
    else:
        d = os.path.abspath(os.fspath(staging))
        if not os.path.isdir(d):
            return None, "staging folder %s does not exist" % d
    if not hasattr(os, "statvfs"):
        return None, "no statvfs on this system to check %s's free space" % d
    margin = max(64 << 20, need // 20)
    try:
        free = _free_bytes(d)
    except OSError as e:
        return None, "statvfs %s: %s" % (d, e)
    if free < need + margin:
        return None, "%s has %d bytes free, the weights need %d and a margin of %d" % (d, free, need, margin)
    if _fs_type(d) in _RAM_FS:
        avail = _mem_available()
        if avail is not None and avail < need + margin:
            return None, "%s is RAM and only %d bytes of memory are available (need %d + %d)" % (d, avail, need, margin)
    return d, None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def _remove_stale_stages(d):
    """Remove staging folders left in d by this user's processes that died (killed
    mid-step): each is named gomerge-stage-PID-*. POSIX only (os.kill(pid, 0) would
    terminate a process on Windows)."""
    if os.name != "posix":
        return
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        if not n.startswith(_STAGE_PREFIX):
            continue
        pid = n[len(_STAGE_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        p = os.path.join(d, n)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if st.st_uid == os.getuid() and os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)


def _is_weight_file(name):
    return name.endswith(".safetensors") or name.endswith(".safetensors.index.json")


def _folder_stageable(path):
    """None if a merge written with --out into folder path ends as an in-place merge
    of it would: gomerge replaces a folder that holds model.safetensors or the index
    (or nothing), and copies its other top-level files from the staged folder (where
    they are links to the originals). Else why not: sub-folders and links are carried
    by an in-place merge but not by --out."""
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        return "%s is not a folder" % path
    names = os.listdir(path)
    if names and "model.safetensors" not in names and _INDEX not in names:
        return "%s holds neither model.safetensors nor %s" % (path, _INDEX)
    for n in names:
        if _is_weight_file(n):
            continue
        p = os.path.join(path, n)
        if os.path.islink(p) or not os.path.isfile(p):
            return "%s is not a plain file" % p
    return None


def _stage_and_merge(weights, stage_dir, prefix, out, meta, merge, shard_bytes=DEFAULT_SHARD_BYTES):
    """Save weights to a private folder under stage_dir, run merge(staged) (gomerge sfa
    --current staged --out out), and remove the folder whatever happens.

    Returns (report, staged folder), or (None, why) when the staged copy could not be
    written (no space after all): nothing has run then, and the caller saves the
    unstaged way. A folder out gets links to its other files in the staged folder, so
    that gomerge carries them over (as copies)."""
    if os.name == "posix":
        _remove_stale_stages(stage_dir)
    d = tempfile.mkdtemp(prefix=prefix, dir=stage_dir)
    try:
        if _is_folder(out):
            staged = os.path.join(d, "current")
            os.mkdir(staged)
            if os.path.isdir(out):
                for n in os.listdir(out):
                    if not _is_weight_file(n):
                        os.symlink(os.path.join(os.path.abspath(out), n), os.path.join(staged, n))
        else:
            staged = os.path.join(d, "current.safetensors")
        try:
            save_state_dict(weights, staged, meta, shard_bytes=shard_bytes, fsync=False)
        except OSError as e:
            return None, "writing %s: %s" % (staged, e)
        return merge(staged), d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- SFA ------------------------------------------------------------------------------

class SFA:
    """Sequential Fine-tuning with Averaging for one task, driven by the trainer.

    anchor:  the checkpoint that finished the previous task (a .safetensors file, a
             Hugging Face folder, or either compressed by gomerge compress: .gmz, read
             directly by every merge; finish_task can write it so).
    current: the checkpoint (.safetensors file or Hugging Face folder) that holds the
             merge after each step; gomerge replaces it atomically (see staging).
    steps, p: the task's length T and the averaging fraction p (schedule()).
    beta:    the anchor's weight; or fisher + eta for per-element beta_j = min(1, eta*F_j).
    distributed: None (default) coordinates the ranks whenever torch.distributed is
             initialized with 2 or more ranks: rank 0 saves and merges, every rank loads
             the merged file (current must be on storage every rank sees). False: each
             process merges on its own (a sharded trainer whose ranks each own a shard
             file); True: like None, but an error without a process group.
    group:   the process group (default: the whole job).
    load:    "file" (every rank maps the merged file) or "broadcast" (rank 0 loads it
             and broadcasts the tensors: no shared storage needed for reading).
    sync_current: fsync the weights saved to current before each merge (default). The
             merged file gomerge writes over it is fsynced either way; False skips a
             flush of data that is read at once and replaced by the merge, which is
             most of the save's cost on a disk (bench/roundtrip). Nothing changes on
             tmpfs, where fsync is free. Unused when the weights are staged.
    keep_history: a folder: every merge's result is also stored there, compressed as
             a delta against the anchor (gomerge sfa --keep-history: NNNNNN.gmz in
             order), so any earlier point of the task can be restored with
             ``gomerge decompress DIR/NNNNNN.gmz OUT --against ANCHOR`` (a folder
             as current is stored as the compressed folder DIR/NNNNNN).
    staging: where the weights go before each merge. "auto" (default): when current
             is not on a RAM filesystem and /dev/shm holds the weights with a margin
             (free space and available memory), they are saved to a private folder
             there (a memory copy), gomerge reads them from it and writes the merge
             to current itself (--out: temporary file, fsynced, renamed, as
             --in-place does), and the folder is removed, also when the merge fails.
             On a disk that is one durable write per step, by gomerge's writer, where
             saving to current first writes the model twice (bench/roundtrip). A
             folder path: stage there instead, whatever its filesystem (same space
             check). None: never stage; save to current and merge it in place. When
             the staging folder lacks room the step is not staged; the reason is in
             self.staging_skipped. After the step current holds the merge either way.
             A Hugging Face folder as current is staged when it holds only files (its
             config and tokenizer are carried into the merge as copies); with
             sub-folders or links in it, it is merged in place.
    device:  gomerge's --device for the merges. "cpu" (default), not gomerge's own
             default "auto": the trainer's GPU is busy training, every merge process
             would open a CUDA context on it (memory the trainer may need), and on the
             first GPU measured (an H200 with 16 cores, docs/gpu.md) opening it and
             calibrating cost 0.35-0.45 s a merge, after which the CPU won every
             method anyway. "auto" or "cuda" to merge on a GPU of a node set aside for
             it.
    """

    def __init__(self, anchor, current, steps, p, beta=0.5, fisher=None, eta=None,
                 binary=None, timeout=None, threads=None, distributed=None, group=None,
                 load="file", sync_current=True, staging="auto", keep_history=None, device="cpu"):
        if fisher is not None and eta is None:
            raise ValueError("fisher needs eta")
        if not (0 <= beta <= 1):
            raise ValueError("beta must be in [0, 1], got %r" % (beta,))
        self.anchor, self.current = anchor, current
        self.steps, self.p, self.beta = steps, p, beta
        self.fisher, self.eta = fisher, eta
        self.binary, self.timeout, self.threads = find_binary(binary), timeout, threads
        self.device = _check_device(device)
        self.schedule = schedule(steps, p)
        self._merge_steps = set(self.schedule)
        if load not in ("file", "broadcast"):
            raise ValueError("load must be 'file' or 'broadcast', got %r" % (load,))
        self.distributed, self.group, self.load = distributed, group, load
        self.sync_current = sync_current
        self.staging = staging
        self.keep_history = keep_history
        self.staging_skipped = None  # why the last step was not staged (None: it was, or staging is off)
        self.reports = []  # the JSON report of every merge, in order
        self._last_merged = None

    def is_merge_step(self, step):
        """Whether the trainer averages after optimizer step `step` (1-based)."""
        return step in self._merge_steps

    def schedule_from_binary(self):
        """The schedule as ``gomerge sfa schedule --json`` prints it."""
        return run(["sfa", "schedule", "--steps", str(self.steps), "--p", repr(float(self.p))],
                   self.binary, self.timeout)

    def merge(self):
        """Average the checkpoint at self.current toward the anchor, in place.

        Returns gomerge's JSON report (l2_before and l2_after are the distances to the
        anchor before and after). Raises GomergeError; the file is then unchanged.
        """
        return self._merge(self.current, None)

    def _merge(self, current, out):
        """gomerge sfa on current, in place (out None) or to out; the report is kept."""
        rep = run(self._args(current, out), self.binary, self.timeout)
        self.reports.append(rep)
        return rep

    def _args(self, current, out):
        args = ["sfa", "--anchor", self.anchor, "--current", current]
        args += ["--in-place"] if out is None else ["--out", out]
        if self.fisher is not None:
            args += ["--fisher", self.fisher, "--eta", repr(float(self.eta))]
        else:
            args += ["--beta", repr(float(self.beta))]
        if self.threads:
            args += ["--threads", str(self.threads)]
        args += ["--device", self.device]
        if self.keep_history:
            args += ["--keep-history", self.keep_history]
        return args

    def average_state_dict(self, state_dict):
        """Checkpoint the floating-point tensors of state_dict, merge them, and copy the
        averaged values back into the same tensors (so parameters the optimizer holds
        stay the same objects, on their own device and dtype). Integer buffers are not
        touched (see float_tensors); make the anchor with save_weights. Returns the
        report.

        The tensors go to disk straight from their memory and come back from the mapped
        merge (load_into): no copy of the model is held in between.

        Under torch.distributed (see the distributed argument), rank 0 saves and merges,
        and every rank then loads the one merged file (or receives it by broadcast)."""
        weights = float_tensors(state_dict)
        dist = self._dist()
        if dist is None:
            rep = self._save_and_merge(weights)
            self._load(weights)
            return rep
        return self._average_distributed(dist, weights)

    def _save_and_merge(self, weights):
        """Save weights and merge them into self.current: staged in RAM where
        self.staging allows (the staging argument), else saved to current and merged in
        place. Returns the report."""
        meta = {"gomerge.trainer": "gomerge.py"}
        target = self.current
        if _is_folder(target):
            # --in-place replaces the folder a link points to; so does this
            target = os.path.realpath(target)
        d, why = _staging_dir(self.staging, os.path.dirname(os.path.abspath(target)), _weights_bytes(weights))
        if d is not None and not os.path.isdir(os.path.dirname(os.path.abspath(target))):
            d, why = None, "the folder of %s does not exist" % target
        if d is not None and _is_folder(target):
            why = _folder_stageable(target)
            if why is not None:
                d = None
        rep = None
        if d is not None:
            def merge(staged):
                rep = run(self._args(staged, target), self.binary, self.timeout)
                # The step stands for an in-place merge of current: say so, and name
                # the staged copy (removed by now) apart.
                rep["in_place"] = True
                for i in rep.get("inputs") or []:
                    if i.get("role") == "current":
                        i["path"] = self.current
                return rep
            rep, info = _stage_and_merge(weights, d, "%s%d-" % (_STAGE_PREFIX, os.getpid()), target, meta, merge)
            if rep is None:
                why = info
            else:
                rep["staging"] = info
                self.reports.append(rep)
        self.staging_skipped = why if self.staging not in (None, False) else None
        if rep is None:
            save_state_dict(weights, self.current, meta, fsync=self.sync_current)
            rep = self.merge()
        return rep

    def _load(self, weights):
        try:
            load_into(weights, self.current)
        except ValueError as e:
            raise GomergeError([self.current], None, "merged checkpoint: %s" % e) from e

    def _dist(self):
        """torch.distributed when this SFA coordinates ranks, else None."""
        if self.distributed is False:
            return None
        try:
            import torch.distributed as dist
        except ImportError:
            dist = None
        on = dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size(self.group) > 1
        if self.distributed and not on:
            raise RuntimeError("SFA(distributed=True) needs an initialized torch.distributed process group of 2 or more ranks")
        return dist if on else None

    def _average_distributed(self, dist, weights):
        import torch
        group = self.group
        rank = dist.get_rank(group)
        src = dist.get_global_rank(group, 0) if group is not None and hasattr(dist, "get_global_rank") else 0
        device = torch.device("cpu")
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        msg = None
        if rank == 0:
            try:
                msg = {"report": self._save_and_merge(weights)}
            except GomergeError as e:
                msg = {"error": e.message, "exit_status": e.exit_status, "argv": e.argv}
        # One merge for the whole job: rank 0's outcome (report or error) goes to
        # every rank as JSON, so that a failed merge raises everywhere instead of
        # leaving the other ranks waiting.
        msg = _broadcast_json(dist, msg, src, group, device)
        if "error" in msg:
            raise GomergeError(msg["argv"], msg["exit_status"], msg["error"])
        rep = msg["report"]
        if rank != 0:
            self.reports.append(rep)
        if self.load == "broadcast":
            if rank == 0:
                self._load(weights)
            unique, _ = _dedup(weights)
            with torch.no_grad():
                for t in unique.values():
                    _broadcast_bits(dist, t, src, group)
        else:
            self._load(weights)
        # Nobody may replace the merged file before every rank has read it.
        dist.barrier(group)
        return rep

    def maybe_average(self, model, step):
        """Call after optimizer step `step` (1-based): averages the model's weights if
        the schedule says so. Returns the report, or None when it was not a merge step
        or this step was already averaged (a callback that fires per micro-batch under
        gradient accumulation sees the same optimizer step several times)."""
        if not self.is_merge_step(step) or step == self._last_merged:
            return None
        rep = self.average_state_dict(model.state_dict())
        self._last_merged = step
        return rep

    def finish_task(self, next_anchor=None):
        """Roll the anchor forward: the merge at step T is the next task's anchor.

        Copies self.current to next_anchor (default: self.anchor, replaced atomically),
        makes it the anchor and returns its path. A next_anchor ending in .gmz is
        written compressed (gomerge compress: lossless, about 1.5x smaller in BF16,
        written atomically by gomerge), and later merges read it as it is.
        """
        dst = next_anchor or self.anchor
        if dst.endswith(".gmz"):
            run(["compress", self.current, dst], self.binary, self.timeout)
            self.anchor = dst
            return dst

        def copy(out):
            with open(self.current, "rb") as src:
                shutil.copyfileobj(src, out)

        _write_atomically(dst, copy)
        self.anchor = dst
        return dst


def _broadcast_bits(dist, t, src, group):
    """Broadcast a tensor in place as raw bytes: gloo has neither bfloat16 nor int16,
    and the bits are what every rank must end with."""
    import torch
    if t.numel() == 0:
        return
    c = t if t.is_contiguous() else t.contiguous()
    dist.broadcast(c.reshape(-1).view(torch.uint8), src, group=group)
    if c is not t:
        t.copy_(c)


def _broadcast_json(dist, obj, src, group, device):
    """obj (JSON-able, given on rank src) on every rank: no pickle on the wire."""
    import torch
    if dist.get_rank() == src:
        body = json.dumps(obj).encode("utf-8")
        n = torch.tensor([len(body)], dtype=torch.int64, device=device)
    else:
        n = torch.zeros(1, dtype=torch.int64, device=device)
    dist.broadcast(n, src, group=group)
    if dist.get_rank() == src:
        buf = torch.frombuffer(bytearray(body), dtype=torch.uint8).to(device)
    else:
        buf = torch.empty(int(n.item()), dtype=torch.uint8, device=device)
    dist.broadcast(buf, src, group=group)
    return json.loads(bytes(buf.cpu().numpy()).decode("utf-8"))


# --- k tasks, resumable ----------------------------------------------------------------

def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ContinualRun:
    """SFA over a sequence of tasks, end to end, resumable after a crash at any point.

    The run lives in workdir. Its files say where it is:

      state.json                       {"task": k, "step": s, "weights": ..., "anchor": ...}
      weights-tKKK-sSSSSSSS.safetensors  the model's float weights after step s of task k
                                       (a merge: SFA averages at the schedule's steps)
      aux-tKKK-sSSSSSSS.safetensors      what else a bit-exact restart needs: the
                                       optimizer's state, the model's integer buffers,
                                       torch's random number generator state

    state.json is replaced atomically, and only after the files it names are complete
    and durable; files it does not name are scratch and are removed. So a trainer
    killed at any point (mid-save, mid-merge, between tasks) that calls resume() again
    loads the last committed weights, optimizer and RNG and redoes the steps since: if
    its steps are deterministic given those (data drawn with torch's RNG, or from
    (task, step)), the run ends bit for bit where an uninterrupted one would.

        run = ContinualRun("ckpt", model, tasks=["math", "law", "code"], steps=1000,
                           p=0.1, beta=0.5, optimizer=opt)
        run.resume()                       # loads the state, or starts: anchor = model
        while not run.done:
            for step in range(run.step + 1, run.task_steps + 1):
                train_one_step(run.task_name, step)
                run.after_step(step)       # averages (and commits) on the schedule
            run.finish_task()              # this task's last merge is the next anchor

    The first task's anchor is the model as resume() first finds it (the pretrained
    model). steps is one int or one per task.

    staging ("auto", None or a folder; as SFA's) is where the weights saved before each
    merge go: with "auto", a private folder in /dev/shm when workdir is not on a RAM
    filesystem and /dev/shm has room. gomerge then reads them there and writes the
    merge into workdir itself (fsynced, renamed): one durable write of the model per
    averaging step. Without staging the weights are saved into workdir and merged in
    place. scratch_dir, if given, is the staging folder (the name of earlier versions).

    compress_anchors: keep each task's anchor compressed, as anchor-tKKK.gmz (gomerge
    compress, lossless: the run's bits are the same), instead of naming the weights
    file the task started from. Every merge of the task reads it directly; the anchor
    then takes about two thirds of the space of a BF16 weights file.

    device: gomerge's --device for the merges, "cpu" by default (as SFA's).
    """

    _STATE = "state.json"
    _FORMAT = "gomerge.continual/1"

    def __init__(self, workdir, model, tasks, steps, p, beta=0.5, optimizer=None,
                 binary=None, timeout=None, threads=None, scratch_dir=None, staging="auto",
                 compress_anchors=False, device="cpu"):
        self.workdir = os.path.abspath(workdir)
        self.device = _check_device(device)
        self.compress_anchors = compress_anchors
        self.staging = os.path.abspath(scratch_dir) if scratch_dir else staging
        self.staging_skipped = None  # why the last merge was not staged
        self._scratch_prefix = ".scratch-%s-" % hashlib.sha1(self.workdir.encode("utf-8")).hexdigest()[:12]
        self.model, self.optimizer = model, optimizer
        self.tasks = list(range(tasks)) if isinstance(tasks, int) else list(tasks)
        if not self.tasks:
            raise ValueError("no tasks")
        self.steps = [steps] * len(self.tasks) if isinstance(steps, int) else list(steps)
        if len(self.steps) != len(self.tasks):
            raise ValueError("%d tasks but %d step counts" % (len(self.tasks), len(self.steps)))
        self.schedules = [schedule(t, p) for t in self.steps]
        if not (0 <= beta <= 1):
            raise ValueError("beta must be in [0, 1], got %r" % (beta,))
        self.p, self.beta = p, beta
        self.binary, self.timeout, self.threads = find_binary(binary), timeout, threads
        self.state = None
        self.reports = []

    # where the run is
    @property
    def task(self):
        """The index of the task being trained (len(tasks) when done)."""
        return self._need()["task"]

    @property
    def step(self):
        """The last step of the task whose result is committed (0 at a task's start)."""
        return self._need()["step"]

    @property
    def done(self):
        return self.task >= len(self.tasks)

    @property
    def task_name(self):
        return self.tasks[self.task]

    @property
    def task_steps(self):
        return self.steps[self.task]

    @property
    def anchor(self):
        return os.path.join(self.workdir, self._need()["anchor"])

    def _need(self):
        if self.state is None:
            raise RuntimeError("call resume() first")
        return self.state

    def _path(self, name):
        return os.path.join(self.workdir, name)

    def resume(self):
        """Load the committed state into the model (and optimizer, RNG), or start a new
        run from the model as it is. Returns (task, step)."""
        os.makedirs(self.workdir, exist_ok=True)
        sp = self._path(self._STATE)
        if not os.path.exists(sp):
            w, a = "weights-t000-s0000000.safetensors", "aux-t000-s0000000.safetensors"
            save_weights(self.model, self._path(w))
            self._save_aux(self._path(a))
            self._commit({"task": 0, "step": 0, "weights": w, "anchor": self._anchor_of(w, 0), "aux": a, "merges": 0})
            return 0, 0
        with open(sp, "rb") as f:
            st = json.loads(f.read().decode("utf-8"))
        if st.get("format") != self._FORMAT:
            raise ValueError("%s: not a %s state" % (sp, self._FORMAT))
        want = {"tasks": [str(t) for t in self.tasks], "steps": self.steps, "p": self.p, "beta": self.beta}
        for k, v in want.items():
            if st.get(k) != v:
                raise ValueError("%s: %s is %r on disk, %r here: another run's folder" % (sp, k, st.get(k), v))
        try:
            load_into(float_tensors(self.model.state_dict()), self._path(st["weights"]))
        except ValueError as e:
            raise ValueError("%s: %s" % (sp, e)) from e
        self._load_aux(self._path(st["aux"]))
        self.state = st
        self._clean()
        return st["task"], st["step"]

    def after_step(self, step):
        """Call after optimizer step `step` (1-based) of the current task. At the
        schedule's steps the weights are averaged toward the anchor and the run is
        committed; returns gomerge's report then, else None."""
        st = self._need()
        if self.done:
            raise RuntimeError("the run is done")
        if step not in self.schedules[st["task"]]:
            return None
        if step <= st["step"]:
            raise ValueError("step %d of task %d is already committed (at %d)" % (step, st["task"], st["step"]))
        k = st["task"]
        weights = float_tensors(self.model.state_dict())
        meta = {"gomerge.trainer": "gomerge.py"}
        # The merge goes to a per-process scratch name in workdir, renamed at the commit:
        # a gomerge left running by a killed trainer only ever writes its own scratch.
        scratch = self._path("%s%d.safetensors" % (self._scratch_prefix, os.getpid()))
        tail = ["--beta", repr(float(self.beta)), "--device", self.device]
        if self.threads:
            tail += ["--threads", str(self.threads)]
        rep = None
        d, why = _staging_dir(self.staging, self.workdir, _weights_bytes(weights))
        if d is not None:
            rep, info = _stage_and_merge(
                weights, d, "%s%d-" % (self._scratch_prefix, os.getpid()), scratch, meta,
                lambda staged: run(["sfa", "--anchor", self.anchor, "--current", staged, "--out", scratch] + tail,
                                   self.binary, self.timeout))
            if rep is None:
                why = info
            else:
                rep["staging"] = info
        self.staging_skipped = why if self.staging not in (None, False) else None
        if rep is None:
            # The scratch file is read at once by gomerge and never trusted after a
            # crash: only the merge gomerge writes over it (fsynced) becomes a checkpoint.
            save_state_dict(weights, scratch, meta, fsync=False)
            rep = run(["sfa", "--anchor", self.anchor, "--current", scratch, "--in-place"] + tail,
                      self.binary, self.timeout)
        load_into(weights, scratch)
        w = "weights-t%03d-s%07d.safetensors" % (k, step)
        a = "aux-t%03d-s%07d.safetensors" % (k, step)
        self._save_aux(self._path(a))
        os.replace(scratch, self._path(w))
        self._commit(dict(st, step=step, weights=w, aux=a, merges=st["merges"] + 1))
        self.reports.append(rep)
        return rep

    def finish_task(self):
        """End the current task: its last merge becomes the next task's anchor. Returns
        the anchor's path."""
        st = self._need()
        if self.done:
            raise RuntimeError("the run is done")
        if st["step"] != self.steps[st["task"]]:
            raise RuntimeError("task %d ends at step %d; the last committed step is %d"
                               % (st["task"], self.steps[st["task"]], st["step"]))
        nxt = st["task"] + 1
        # after the last task there is no merge left to read an anchor: name the weights
        anchor = self._anchor_of(st["weights"], nxt) if nxt < len(self.tasks) else st["weights"]
        self._commit(dict(st, task=nxt, step=0, anchor=anchor))
        return self.anchor

    def _anchor_of(self, weights, task):
        """The name of task `task`'s anchor, made from the weights file `weights`: the
        file itself, or with compress_anchors its lossless .gmz (an uncommitted one is
        scratch, removed by _clean like any file state.json does not name)."""
        if not self.compress_anchors:
            return weights
        a = "anchor-t%03d.gmz" % task
        run(["compress", self._path(weights), self._path(a)], self.binary, self.timeout)
        return a

    def _commit(self, st):
        st = dict(st, format=self._FORMAT, tasks=[str(t) for t in self.tasks], steps=self.steps,
                  p=self.p, beta=self.beta)
        body = json.dumps(st, indent=1, sort_keys=True).encode("utf-8")
        _fsync_dir(self.workdir)  # the renames of the files st names come first
        _write_atomically(self._path(self._STATE), lambda f: f.write(body))
        _fsync_dir(self.workdir)
        self.state = st
        self._clean()

    def _clean(self):
        keep = {self._STATE, self.state["weights"], self.state["anchor"], self.state["aux"]}
        for n in os.listdir(self.workdir):
            ours = n.startswith(("weights-t", "aux-t", "anchor-t", self._scratch_prefix, ".weights-t", ".aux-t",
                                 ".anchor-t", "." + self._STATE + ".", "." + self._scratch_prefix))
            if ours and n not in keep:
                _unlink(self._path(n))
        # what a killed step left in the staging folder: only this run's (the folder
        # may be shared, like /dev/shm)
        stage = _DEFAULT_STAGING if self.staging == "auto" else self.staging
        if stage not in (None, False) and os.path.isdir(stage):
            for n in os.listdir(stage):
                if n.startswith((self._scratch_prefix, "." + self._scratch_prefix)):
                    p = os.path.join(stage, n)
                    if os.path.isdir(p) and not os.path.islink(p):
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        _unlink(p)

    # the optimizer, integer buffers and RNG: what weights alone do not restore
    def _save_aux(self, path):
        import torch
        tensors, plain = {}, {}
        opt = {"param_groups": [], "state": {}}
        if self.optimizer is not None:
            osd = self.optimizer.state_dict()
            opt["param_groups"] = osd["param_groups"]
            for idx, st in osd["state"].items():
                for key, v in st.items():
                    if torch.is_tensor(v):
                        tensors["optim.%s.%s" % (idx, key)] = v
                    else:
                        plain.setdefault(str(idx), {})[key] = v
            opt["state"] = plain
        for name, v in self.model.state_dict().items():
            if not v.is_floating_point():
                tensors["buffer." + name] = v
        tensors["rng.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, r in enumerate(torch.cuda.get_rng_state_all()):
                tensors["rng.cuda.%d" % i] = r
        save_state_dict(tensors, path, {"gomerge.optimizer": json.dumps(opt, sort_keys=True)})

    def _load_aux(self, path):
        import torch
        tensors = load_state_dict(path)
        with _Mapped(path) as m:
            opt = json.loads(m.metadata.get("gomerge.optimizer", "{}"))
        if self.optimizer is not None:
            state = {}
            for idx, kv in opt.get("state", {}).items():
                state.setdefault(int(idx), {}).update(kv)
            for name, v in tensors.items():
                if name.startswith("optim."):
                    idx, key = name[len("optim."):].split(".", 1)
                    state.setdefault(int(idx), {})[key] = v
            self.optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
        bufs = {n[len("buffer."):]: v for n, v in tensors.items() if n.startswith("buffer.")}
        live = self.model.state_dict()
        with torch.no_grad():
            for n, v in bufs.items():
                if n not in live:
                    raise ValueError("%s: buffer %r is not in the model" % (path, n))
                live[n].copy_(v)
        torch.set_rng_state(tensors["rng.cpu"])
        cuda = [tensors["rng.cuda.%d" % i] for i in range(sum(1 for n in tensors if n.startswith("rng.cuda.")))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


# --- framework adapters (each imports its framework only when called) -----------------

def hf_callback(sfa):
    """A transformers.TrainerCallback that averages at the schedule's steps."""
    from transformers import TrainerCallback

    class GomergeSFACallback(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            sfa.maybe_average(model, state.global_step)
            return control

    return GomergeSFACallback()


def lightning_callback(sfa):
    """A Lightning Callback that averages at the schedule's steps (trainer.global_step
    counts optimizer steps)."""
    try:
        from lightning.pytorch import Callback
    except ImportError:
        from pytorch_lightning import Callback

    class GomergeSFACallback(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sfa.maybe_average(pl_module, trainer.global_step)

    return GomergeSFACallback()


def composer_callback(sfa):
    """A Composer Callback that averages at the schedule's steps (batches seen)."""
    from composer import Callback

    class GomergeSFACallback(Callback):
        def batch_end(self, state, logger):
            sfa.maybe_average(state.model, int(state.timestamp.batch))

    return GomergeSFACallback()
