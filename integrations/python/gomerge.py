"""Call gomerge from a Python training loop: Sequential Fine-tuning with Averaging (SFA).

Standard library only. torch is imported lazily, and only by the helpers that convert
torch tensors; the Hugging Face, Lightning and Composer adapters import their framework
only when you build one.

While training on a new task for T steps, every max(1, floor(p*T)) steps and at step T
the weights are replaced by  beta*theta_anchor + (1-beta)*theta_current,  theta_anchor
being the model that finished the previous task. The trainer checkpoints its weights to
a safetensors file, runs ``gomerge sfa --in-place --json`` on it, and loads the result
back; the merge at step T is the next task's anchor.

    save_weights(model, "ckpt/task_A.safetensors")   # after task A
    sfa = SFA(anchor="ckpt/task_A.safetensors", current="ckpt/current.safetensors",
              steps=T, p=0.1, beta=0.5)
    for step in range(1, T + 1):
        loss = ...; loss.backward(); opt.step(); opt.zero_grad()
        sfa.maybe_average(model, step)     # at the steps of sfa.schedule
    sfa.finish_task()                      # ckpt/current becomes the next anchor

Errors: a non-zero exit of gomerge raises GomergeError, which carries the exit status
(2 usage, 3 bad input, 4 I/O failure, 1 anything else), gomerge's message and the
command line. A failed merge leaves the checkpoint file unchanged, so training can go
on from the weights still in memory.
"""

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

__all__ = [
    "GomergeError", "SFA", "Tensor", "schedule", "run", "save_file", "load_file",
    "save_state_dict", "load_state_dict", "save_weights", "float_tensors", "hf_callback", "lightning_callback",
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
    if sys.byteorder != "little":
        raise RuntimeError("safetensors data is little-endian; this host is not")
    meta = {"format": "pt"}
    meta.update(metadata or {})
    header = {"__metadata__": {str(k): str(v) for k, v in meta.items()}}
    off = 0
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError("tensor %r is a %s, not a gomerge.Tensor (use save_state_dict for torch)" % (name, type(t).__name__))
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [off, off + len(t.data)]}
        off += len(t.data)
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * (-len(hdr) % 8)  # the data section starts 8-byte aligned

    def write(f):
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for t in tensors.values():
            f.write(t.data)

    _write_atomically(path, write)


def _write_atomically(path, write):
    """Write a file through a temporary file beside it, fsynced and renamed over path,
    so that a reader (or a crash) sees the old file or the complete new one."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_file(path):
    """Read a safetensors file into (dict of name -> Tensor, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError("%s: %d bytes, too short for a safetensors file" % (path, len(blob)))
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER or 8 + n > len(blob):
        raise ValueError("%s: header length %d does not fit the file (%d bytes)" % (path, n, len(blob)))
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        if not (0 <= b <= e <= len(data)):
            raise ValueError("%s: tensor %r has offsets [%d, %d] outside the data (%d bytes)" % (path, name, b, e, len(data)))
        out[name] = Tensor(info["dtype"], info["shape"], data[b:e])
    return out, meta


# --- torch conversion (torch imported only here) -------------------------------------

def _torch_dtypes():
    import torch
    return {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
            torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
            torch.uint8: "U8", torch.bool: "BOOL"}


def to_tensor(t):
    """A torch tensor as a gomerge.Tensor (copied to the CPU)."""
    import torch
    names = _torch_dtypes()
    if t.dtype not in names:
        raise TypeError("cannot store torch dtype %s in safetensors" % t.dtype)
    c = t.detach().cpu().contiguous()
    # numpy has no bfloat16: move its bits as int16.
    raw = c.view(torch.int16) if c.dtype == torch.bfloat16 else c
    return Tensor(names[t.dtype], tuple(c.shape), raw.numpy().tobytes())


def from_tensor(t):
    """A gomerge.Tensor as a new CPU torch tensor."""
    import torch
    dt = {v: k for k, v in _torch_dtypes().items()}[t.dtype]
    if len(t.data) == 0:
        return torch.empty(t.shape, dtype=dt)
    return torch.frombuffer(bytearray(t.data), dtype=dt).reshape(t.shape)


def save_state_dict(state_dict, path, metadata=None):
    """Write a torch state_dict as safetensors (tensors that share storage are each
    written out in full, as safetensors has no aliasing)."""
    save_file({k: to_tensor(v) for k, v in state_dict.items()}, path, metadata)


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
    """Read a safetensors file as a {name: torch.Tensor} dict on the CPU."""
    tensors, _ = load_file(path)
    return {k: from_tensor(v) for k, v in tensors.items()}


# --- SFA ------------------------------------------------------------------------------

class SFA:
    """Sequential Fine-tuning with Averaging for one task, driven by the trainer.

    anchor:  the checkpoint that finished the previous task (a .safetensors file or a
             Hugging Face folder).
    current: the .safetensors file the trainer checkpoints to before each merge; gomerge
             replaces it in place, atomically.
    steps, p: the task's length T and the averaging fraction p (schedule()).
    beta:    the anchor's weight; or fisher + eta for per-element beta_j = min(1, eta*F_j).
    """

    def __init__(self, anchor, current, steps, p, beta=0.5, fisher=None, eta=None,
                 binary=None, timeout=None, threads=None):
        if fisher is not None and eta is None:
            raise ValueError("fisher needs eta")
        if not (0 <= beta <= 1):
            raise ValueError("beta must be in [0, 1], got %r" % (beta,))
        self.anchor, self.current = anchor, current
        self.steps, self.p, self.beta = steps, p, beta
        self.fisher, self.eta = fisher, eta
        self.binary, self.timeout, self.threads = find_binary(binary), timeout, threads
        self.schedule = schedule(steps, p)
        self._merge_steps = set(self.schedule)
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
        args = ["sfa", "--anchor", self.anchor, "--current", self.current, "--in-place"]
        if self.fisher is not None:
            args += ["--fisher", self.fisher, "--eta", repr(float(self.eta))]
        else:
            args += ["--beta", repr(float(self.beta))]
        if self.threads:
            args += ["--threads", str(self.threads)]
        rep = run(args, self.binary, self.timeout)
        self.reports.append(rep)
        return rep

    def average_state_dict(self, state_dict):
        """Checkpoint the floating-point tensors of state_dict, merge them, and copy the
        averaged values back into the same tensors (so parameters the optimizer holds
        stay the same objects, on their own device and dtype). Integer buffers are not
        touched (see float_tensors); make the anchor with save_weights. Returns the
        report."""
        import torch
        weights = float_tensors(state_dict)
        save_state_dict(weights, self.current, {"gomerge.trainer": "gomerge.py"})
        rep = self.merge()
        merged = load_state_dict(self.current)
        with torch.no_grad():
            for name, t in weights.items():
                if name not in merged:
                    raise GomergeError([self.current], None, "merged checkpoint lacks tensor %r" % name)
                t.copy_(merged[name])
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
        makes it the anchor and returns its path.
        """
        dst = next_anchor or self.anchor

        def copy(out):
            with open(self.current, "rb") as src:
                shutil.copyfileobj(src, out)

        _write_atomically(dst, copy)
        self.anchor = dst
        return dst


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
