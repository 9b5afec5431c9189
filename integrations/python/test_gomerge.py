"""Tests of gomerge.py against the real gomerge binary ($GOMERGE_BIN) with torch.

Run by integrations/python/python_test.go; by hand:
    GOMERGE_BIN=/path/to/gomerge /usr/bin/python3 -m unittest -v test_gomerge
"""

import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import types
import unittest

import torch

import gomerge


def tiny_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def task_data(seed, shift):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g) + shift
    y = (x[:, 0] > shift).long() + (x[:, 1] > shift).long()
    return x, y


def train_steps(model, opt, x, y, steps, on_step=None, first=1):
    for step in range(first, first + steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step)


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.bin = os.environ["GOMERGE_BIN"]

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)


class SafetensorsTest(Base):
    def test_round_trip_every_dtype(self):
        sd = {
            "w32": torch.randn(3, 5),
            "w16": torch.randn(2, 3).half(),
            "wbf": torch.randn(7).bfloat16(),
            "w64": torch.randn(2, 2).double(),
            "idx": torch.arange(6).reshape(2, 3),
            "mask": torch.tensor([True, False, True]),
            "scalar": torch.tensor(1.5),
            "empty": torch.zeros(0, 4),
        }
        p = self.path("m.safetensors")
        gomerge.save_state_dict(sd, p, {"step": 3})
        back = gomerge.load_state_dict(p)
        self.assertEqual(set(back), set(sd))
        for k, v in sd.items():
            self.assertEqual(back[k].dtype, v.dtype, k)
            self.assertEqual(back[k].shape, v.shape, k)
            self.assertTrue(torch.equal(back[k], v), k)
        _, meta = gomerge.load_file(p)
        self.assertEqual(meta, {"format": "pt", "step": "3"})
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
        self.assertEqual(n % 8, 0, "header must be padded to 8 bytes")

    def test_gomerge_reads_what_we_write(self):
        # gomerge's reader is strict (tiling, offsets, dtypes): if it accepts the file
        # and reports the same shapes, the writer is right.
        p = self.path("m.safetensors")
        gomerge.save_state_dict(tiny_model(0).state_dict(), p)
        out = subprocess.run([self.bin, "inspect", p, "--json"], stdout=subprocess.PIPE, check=True)
        rep = json.loads(out.stdout)
        shapes = {t["name"]: t["shape"] for t in rep["tensors"]}
        self.assertEqual(shapes, {"0.weight": [8, 4], "0.bias": [8], "2.weight": [3, 8], "2.bias": [3]})

    def test_rejects_bad_files(self):
        p = self.path("bad.safetensors")
        with open(p, "wb") as f:
            f.write(struct.pack("<Q", 1 << 40) + b"{}")
        with self.assertRaises(ValueError):
            gomerge.load_file(p)
        with self.assertRaises(ValueError):
            gomerge.Tensor("F32", (3,), b"\0" * 8)


def sfa_want(a, c, beta):
    """torch's own SFA: beta*a + (1-beta)*c in float32, rounded to the dtype."""
    return (beta * a.float() + (1 - beta) * c.float()).to(a.dtype)


def bits(t):
    """The raw bit patterns of a tensor, so equality is bit for bit (NaN, -0 included)."""
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64, 1: torch.uint8}[t.element_size()])


def mixed_state_dict(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "emb.bf16": torch.randn(33, 16, generator=g).bfloat16(),
        "w.f16": torch.randn(16, 9, generator=g).half(),
        "w.f32": torch.randn(9, 7, generator=g),
        # strided: saved from a contiguous host copy, loaded back through copy_
        "w.t": torch.randn(7, 5, generator=g).t(),
        "b.bf16": torch.randn(5, generator=g).bfloat16(),
        "scalar": torch.tensor(0.25),
        "empty": torch.zeros(0, 3),
    }


def bf16_layers(seed):
    """Six 64×64 BF16 layers: enough bytes to shard into a folder of several files."""
    g = torch.Generator().manual_seed(seed)
    return {"layer%d.w" % i: torch.randn(64, 64, generator=g).bfloat16() for i in range(6)}


class ZeroCopyTest(Base):
    """The trainer's round trip: tensors written from their own memory, the merge mapped
    and copied back into the live tensors, bit for bit equal to torch's formula."""

    def check_sfa(self, anchor_path, current_path, beta, make_state):
        a = make_state(10)
        gomerge.save_state_dict(a, anchor_path)
        live = make_state(11)
        ptrs = {k: v.data_ptr() for k, v in live.items()}
        c = {k: v.clone() for k, v in live.items()}
        sfa = gomerge.SFA(anchor_path, current_path, steps=1, p=1, beta=beta, binary=self.bin)
        sfa.average_state_dict(live)
        for k, v in live.items():
            self.assertEqual(v.data_ptr(), ptrs[k], "%s must be updated in place" % k)
            self.assertTrue(torch.equal(bits(v), bits(sfa_want(a[k], c[k], beta))), k)
        return sfa

    def test_bit_exact_file(self):
        self.check_sfa(self.path("a.safetensors"), self.path("c.safetensors"), 0.3, mixed_state_dict)

    def test_bit_exact_sharded_folders(self):
        # Hugging Face folders as anchor and as current: several shards and an index.
        anchor = self.path("anchor")
        sd = bf16_layers(10)
        gomerge.save_state_dict(sd, anchor, shard_bytes=3 * 64 * 64 * 2)
        files = sorted(os.listdir(anchor))
        self.assertEqual(files, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                 "model.safetensors.index.json"])
        back = gomerge.load_state_dict(anchor)
        self.assertEqual(set(back), set(sd))
        for k in sd:
            self.assertTrue(torch.equal(back[k], sd[k]), k)
        # the folder anchor with a file current, then a folder current
        self.check_sfa(anchor, self.path("c.safetensors"), 0.5, bf16_layers)
        cur = self.path("current")
        self.check_sfa(anchor, cur, 0.7, bf16_layers)
        self.assertTrue(os.path.exists(os.path.join(cur, "model.safetensors")))

    def test_tied_weights(self):
        class Tied(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(11, 6)
                self.mid = torch.nn.Linear(6, 6)
                self.head = torch.nn.Linear(6, 11, bias=False)
                self.head.weight = self.emb.weight

        torch.manual_seed(3)
        m = Tied()
        anchor = self.path("a.safetensors")
        gomerge.save_weights(m, anchor)
        tensors, meta = gomerge.load_file(anchor)
        self.assertIn("emb.weight", tensors)
        self.assertNotIn("head.weight", tensors, "a tied weight is stored once")
        self.assertEqual(json.loads(meta["gomerge.aliases"]), {"head.weight": "emb.weight"})
        back = gomerge.load_state_dict(anchor)
        self.assertIs(back["head.weight"], back["emb.weight"])
        a = {k: v.clone() for k, v in m.state_dict().items()}
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(-1.5).add_(0.25)
        c = {k: v.clone() for k, v in m.state_dict().items()}
        sfa = gomerge.SFA(anchor, self.path("c.safetensors"), steps=1, p=1, beta=0.5, binary=self.bin)
        sfa.maybe_average(m, 1)
        self.assertIs(m.head.weight, m.emb.weight, "the tie must survive the round trip")
        for k, v in m.state_dict().items():
            self.assertTrue(torch.equal(v, sfa_want(a[k], c[k], 0.5)), k)

    def test_load_into_checks_before_copying(self):
        sd = mixed_state_dict(1)
        p = self.path("m.safetensors")
        gomerge.save_state_dict(sd, p)
        live = mixed_state_dict(2)
        live["extra"] = torch.zeros(2)
        before = {k: v.clone() for k, v in live.items()}
        with self.assertRaisesRegex(ValueError, "extra"):
            gomerge.load_into(live, p)
        for k, v in live.items():
            self.assertTrue(torch.equal(v, before[k]), "%s changed by a refused load" % k)
        live2 = mixed_state_dict(2)
        live2["w.f32"] = torch.zeros(7, 9)
        with self.assertRaisesRegex(ValueError, "w.f32"):
            gomerge.load_into(live2, p)
        self.assertEqual(sorted(gomerge.load_into(live, p, strict=False)), sorted(sd))
        for k in sd:
            self.assertTrue(torch.equal(bits(live[k]), bits(sd[k])), k)

    @unittest.skipUnless(torch.cuda.is_available() or os.environ.get("GOMERGE_REQUIRE_CUDA") == "1",
                         "no CUDA device (set GOMERGE_REQUIRE_CUDA=1 to require one)")
    def test_cuda_tensors(self):
        def on_gpu(seed):
            return {k: v.cuda() for k, v in mixed_state_dict(seed).items()}

        self.check_sfa(self.path("a.safetensors"), self.path("c.safetensors"), 0.3, on_gpu)


class StagingTest(Base):
    """The weights staged in a RAM folder before each merge (SFA's staging): gomerge
    reads them there and writes the merge to current itself. The staging folder here
    is an ordinary folder given explicitly, so the test runs on any filesystem."""

    def setUp(self):
        super().setUp()
        self.stage = self.path("stage")
        os.mkdir(self.stage)
        self.runs = []
        real = gomerge.run

        def logged(args, binary=None, timeout=None):
            self.runs.append(list(args))
            return real(args, binary, timeout)

        gomerge.run = logged
        self.addCleanup(setattr, gomerge, "run", real)

    def step(self, current, make_state=mixed_state_dict, beta=0.3, **kw):
        """One averaging step on make_state(11) toward make_state(10); checks the live
        tensors against torch's formula bit for bit and returns (sfa, report)."""
        anchor = self.path("a.safetensors")
        a = make_state(10)
        gomerge.save_state_dict(a, anchor)
        live = make_state(11)
        c = {k: v.clone() for k, v in live.items()}
        kw.setdefault("staging", self.stage)
        sfa = gomerge.SFA(anchor, current, steps=1, p=1, beta=beta, binary=self.bin, **kw)
        rep = sfa.average_state_dict(live)
        for k, v in live.items():
            self.assertTrue(torch.equal(bits(v), bits(sfa_want(a[k], c[k], beta))), k)
        # current holds the merge, as after an in-place merge
        back = gomerge.load_state_dict(current)
        for k, v in live.items():
            self.assertTrue(torch.equal(bits(back[k]), bits(v)), k)
        self.assertTrue(rep["in_place"])
        self.assertEqual([i["path"] for i in rep["inputs"]], [anchor, current])
        return sfa, rep

    def last_sfa_args(self):
        runs = [r for r in self.runs if r[0] == "sfa"]
        self.assertTrue(runs, "gomerge sfa did not run")
        return runs[-1]

    def test_device_cpu_by_default_and_as_asked(self):
        """The trainer's merges say --device: cpu unless asked (SFA's device)."""
        for kw, want in [({}, "cpu"), ({"device": "auto"}, "auto")]:
            self.runs.clear()
            _, rep = self.step(self.path("c%s.safetensors" % want), **kw)
            self.assertTrue(self.runs)
            for args in self.runs:
                self.assertIn("--device", args)
                self.assertEqual(args[args.index("--device") + 1], want, args)
            self.assertEqual(rep["device"], "cpu", rep)  # no GPU here: auto runs on the CPU too
        with self.assertRaisesRegex(ValueError, "device"):
            gomerge.SFA(self.path("a"), self.path("c"), steps=1, p=1, binary=self.bin, device="tpu")

    def test_staged_file(self):
        cur = self.path("c.safetensors")
        sfa, rep = self.step(cur)
        self.assertIsNone(sfa.staging_skipped)
        args = self.last_sfa_args()
        self.assertIn("--out", args)
        self.assertEqual(args[args.index("--out") + 1], cur)
        staged = args[args.index("--current") + 1]
        self.assertTrue(staged.startswith(self.stage + os.sep), staged)
        self.assertTrue(rep["staging"].startswith(self.stage + os.sep), rep["staging"])
        self.assertEqual(os.listdir(self.stage), [], "the staged copy must be removed")
        self.assertEqual(len(sfa.reports), 1)
        # a second step replaces current, keeping its mode
        os.chmod(cur, 0o640)
        live = mixed_state_dict(12)
        sfa.average_state_dict(live)
        self.assertEqual(os.stat(cur).st_mode & 0o777, 0o640)
        self.assertEqual(os.listdir(self.stage), [])
        self.assertEqual([n for n in os.listdir(self.dir) if n.startswith(".")], [], "temporary files left")

    def test_failing_merge_removes_the_staged_copy(self):
        anchor = self.path("bad-anchor.safetensors")
        gomerge.save_weights(torch.nn.Linear(3, 3), anchor)
        cur = self.path("c.safetensors")
        gomerge.save_weights(tiny_model(2), cur)
        with open(cur, "rb") as f:
            before_file = f.read()
        live = tiny_model(1).state_dict()
        before = {k: v.clone() for k, v in live.items()}
        sfa = gomerge.SFA(anchor, cur, steps=1, p=1, binary=self.bin, staging=self.stage)
        with self.assertRaises(gomerge.GomergeError) as cm:
            sfa.average_state_dict(live)
        self.assertEqual(cm.exception.exit_status, 3)
        self.assertIn("--out", self.last_sfa_args())
        self.assertEqual(os.listdir(self.stage), [], "a failed merge must not leave the staged copy")
        with open(cur, "rb") as f:
            self.assertEqual(f.read(), before_file, "a failed merge must leave current as it was")
        for k, v in live.items():
            self.assertTrue(torch.equal(v, before[k]), k)

    def test_too_small_falls_back(self):
        real = gomerge._free_bytes
        gomerge._free_bytes = lambda path: 4096 if os.path.abspath(path) == self.stage else real(path)
        self.addCleanup(setattr, gomerge, "_free_bytes", real)
        sfa, rep = self.step(self.path("c.safetensors"))
        self.assertIn("4096 bytes free", sfa.staging_skipped)
        self.assertIn("--in-place", self.last_sfa_args())
        self.assertNotIn("staging", rep)
        self.assertEqual(os.listdir(self.stage), [])

    def test_missing_folder_falls_back(self):
        sfa, rep = self.step(self.path("c.safetensors"), staging=self.path("no-such-folder"))
        self.assertIn("does not exist", sfa.staging_skipped)
        self.assertIn("--in-place", self.last_sfa_args())

    def test_off(self):
        sfa, rep = self.step(self.path("c.safetensors"), staging=None)
        self.assertIsNone(sfa.staging_skipped)
        self.assertIn("--in-place", self.last_sfa_args())

    def test_auto(self):
        # "auto" stages in /dev/shm exactly when current is not on a RAM filesystem
        # already (and /dev/shm is another filesystem with room).
        sfa, rep = self.step(self.path("c.safetensors"), staging="auto")
        shm = os.path.isdir("/dev/shm") and gomerge._fs_type(self.dir) not in ("tmpfs", "ramfs") and \
            os.stat("/dev/shm").st_dev != os.stat(self.dir).st_dev
        if shm and sfa.staging_skipped is None:
            self.assertTrue(rep["staging"].startswith("/dev/shm/"), rep["staging"])
            self.assertFalse(os.path.exists(rep["staging"]))
        elif shm:
            self.assertRegex(sfa.staging_skipped, "free|memory")  # only lack of room may stop it
        else:
            self.assertIsNotNone(sfa.staging_skipped)
            self.assertIn("--in-place", self.last_sfa_args())

    def test_folder_current(self):
        # a sharded folder with a config, as a trainer's checkpoint folder
        cur = self.path("current")
        gomerge.save_state_dict(bf16_layers(3), cur, shard_bytes=3 * 64 * 64 * 2)
        with open(os.path.join(cur, "config.json"), "w") as f:
            f.write('{"model_type": "test"}')
        sfa, rep = self.step(cur, bf16_layers, beta=0.7)
        self.assertIsNone(sfa.staging_skipped)
        self.assertIn("--out", self.last_sfa_args())
        # the same files an in-place merge of the saved folder leaves: the config, and
        # the weights as SFA saved them (one file under 5 GB; the old shards are gone)
        self.assertEqual(sorted(os.listdir(cur)), ["config.json", "model.safetensors"])
        with open(os.path.join(cur, "config.json")) as f:
            self.assertEqual(f.read(), '{"model_type": "test"}')
        self.assertEqual(os.listdir(self.stage), [])
        # a link to the folder: the folder is replaced, the link stays
        link = self.path("link")
        os.symlink(cur, link)
        sfa, rep = self.step(link, bf16_layers, beta=0.7)
        self.assertTrue(os.path.islink(link))
        self.assertIsNone(sfa.staging_skipped)
        # a sub-folder is carried only by an in-place merge: not staged then
        os.mkdir(os.path.join(cur, "trainer_state"))
        sfa, rep = self.step(cur, bf16_layers, beta=0.7)
        self.assertIn("not a plain file", sfa.staging_skipped)
        self.assertIn("--in-place", self.last_sfa_args())
        self.assertTrue(os.path.isdir(os.path.join(cur, "trainer_state")))

    def test_folder_current_keep_history(self):
        """keep_history with a Hugging Face folder as current: each merge is stored
        as a compressed folder, a delta against the anchor, that restores the folder."""
        cur = self.path("current")
        gomerge.save_state_dict(bf16_layers(3), cur, shard_bytes=3 * 64 * 64 * 2)
        with open(os.path.join(cur, "config.json"), "w") as f:
            f.write('{"model_type": "test"}')
        hist = self.path("history")
        sfa, rep = self.step(cur, bf16_layers, beta=0.7, keep_history=hist)
        self.assertEqual(os.listdir(hist), ["000001"])
        self.assertEqual(rep["history"], os.path.join(hist, "000001"))
        back = self.path("restored")
        gomerge.run(["decompress", os.path.join(hist, "000001"), back, "--against", self.path("a.safetensors")], self.bin)
        self.assertEqual(sorted(os.listdir(back)), sorted(os.listdir(cur)))
        for name in os.listdir(cur):
            with open(os.path.join(back, name), "rb") as a, open(os.path.join(cur, name), "rb") as c:
                self.assertEqual(a.read(), c.read(), name)

    def test_stale_staging_of_dead_processes_is_removed(self):
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        p.wait()
        dead = os.path.join(self.stage, "gomerge-stage-%d-x" % p.pid)
        os.mkdir(dead)
        with open(os.path.join(dead, "current.safetensors"), "wb") as f:
            f.write(b"left by a killed trainer")
        alive = os.path.join(self.stage, "gomerge-stage-1-y")  # init never dies
        os.mkdir(alive)
        self.step(self.path("c.safetensors"))
        self.assertEqual(os.listdir(self.stage), ["gomerge-stage-1-y"])

    def test_continual_run_staged(self):
        model = tiny_model(0)
        run = gomerge.ContinualRun(self.path("w"), model, 1, 2, p=0.5, binary=self.bin, staging=self.stage)
        run.resume()
        a = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5)
        c = {k: v.clone() for k, v in model.state_dict().items()}
        rep = run.after_step(1)
        self.assertIsNone(run.staging_skipped)
        self.assertTrue(rep["staging"].startswith(self.stage + os.sep))
        self.assertEqual(os.listdir(self.stage), [])
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(bits(v), bits(sfa_want(a[k], c[k], 0.5))), k)
        w = gomerge.load_state_dict(os.path.join(self.path("w"), run.state["weights"]))
        for k in w:
            self.assertTrue(torch.equal(bits(w[k]), bits(model.state_dict()[k])), k)


class BinaryReadsPythonDtypesTest(Base):
    """Files Python writes, read by the gomerge binary, values checked against what
    Python wrote (not against gomerge.py's own reader)."""

    def test_float_dtypes(self):
        g = torch.Generator().manual_seed(7)
        vals = torch.randn(4, 37, generator=g) * 100
        # zero, an F16 subnormal, a BF16-only tiny value and the F16 maximum (-0 would
        # not survive: 0·0 + 1·(-0) is +0 in IEEE arithmetic)
        vals[0, :4] = torch.tensor([0.0, 3e-7, 1e-30, 65504.0])
        sd = {"f16": vals.half(), "bf16": vals.bfloat16(), "f32": vals.clone()}
        c = self.path("c.safetensors")
        gomerge.save_state_dict(sd, c)
        zero = self.path("z.safetensors")
        gomerge.save_state_dict({k: torch.zeros_like(v) for k, v in sd.items()}, zero)
        # beta = 0 keeps the current's values exactly; --dtype f32 makes gomerge decode
        # F16 and BF16 and write float32, which must equal torch's own widening.
        out = self.path("out.safetensors")
        gomerge.run(["sfa", "--anchor", zero, "--current", c, "--beta", "0", "--dtype", "f32", "--out", out], self.bin)
        with open(out, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            data = f.read()
        for k, v in sd.items():
            info = header[k]
            self.assertEqual(info["dtype"], "F32", k)
            self.assertEqual(info["shape"], list(v.shape), k)
            b, e = info["data_offsets"]
            got = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(v.shape)
            self.assertTrue(torch.equal(bits(got), bits(v.float())), k)
        # the distance to zeros is each tensor's norm, summed in float64 by gomerge
        rep = gomerge.run(["distance", c, zero, "--per-tensor"], self.bin)
        per = {t["name"]: t for t in rep["tensors"]}
        for k, v in sd.items():
            want = v.double().norm().item()
            self.assertAlmostEqual(per[k]["l2"], want, delta=1e-9 * want, msg=k)

    def test_integer_dtypes(self):
        g = torch.Generator().manual_seed(8)
        sd = {
            "i8": torch.randint(-128, 128, (3, 5), generator=g, dtype=torch.int8),
            "i16": torch.randint(-2 ** 15, 2 ** 15, (4, 3), generator=g, dtype=torch.int16),
            "i32": torch.randint(-2 ** 31, 2 ** 31, (7,), generator=g, dtype=torch.int32),
            "i64": torch.tensor([-2 ** 63, 2 ** 63 - 1, 0, 12345678901234], dtype=torch.int64),
            "u8": torch.randint(0, 256, (2, 2, 3), generator=g, dtype=torch.uint8),
            "bool": torch.tensor([[True, False, True], [False, False, True]]),
            "w": torch.randn(3, 3, generator=g),
        }
        a = self.path("a.safetensors")
        gomerge.save_state_dict(sd, a)
        rep = gomerge.run(["inspect", a], self.bin)
        got = {t["name"]: (t["dtype"], t["shape"], t["bytes"]) for t in rep["tensors"]}
        want = {k: (gomerge._torch_dtypes()[v.dtype], list(v.shape), v.numel() * v.element_size()) for k, v in sd.items()}
        self.assertEqual(got, want)
        # gomerge copies integer tensors and requires them equal in both inputs: the
        # same values pass and come out byte for byte ...
        c = self.path("c.safetensors")
        gomerge.save_state_dict({k: v.clone() for k, v in sd.items()}, c)
        out = self.path("out.safetensors")
        gomerge.run(["sfa", "--anchor", a, "--current", c, "--out", out], self.bin)
        back = gomerge.load_state_dict(out)
        for k, v in sd.items():
            if not v.is_floating_point():
                self.assertTrue(torch.equal(back[k], v), k)
        # ... and one changed element in any of them is seen.
        for k, v in sd.items():
            if v.is_floating_point():
                continue
            other = {n: t.clone() for n, t in sd.items()}
            flat = other[k].view(-1)
            flat[flat.numel() // 2] = (~flat[flat.numel() // 2]) if v.dtype == torch.bool else flat[flat.numel() // 2] ^ 1
            gomerge.save_state_dict(other, c)
            with self.assertRaises(gomerge.GomergeError) as cm:
                gomerge.run(["sfa", "--anchor", a, "--current", c, "--out", out], self.bin)
            self.assertEqual(cm.exception.exit_status, 3, k)
            self.assertIn('"%s"' % k, cm.exception.message)

def _ddp_worker(rank, world, d, binary, port):
    """One rank of DistributedTest (module level: torch.multiprocessing spawns it)."""
    import faulthandler
    import torch.distributed as dist
    faulthandler.dump_traceback_later(170, exit=True)  # a hang shows where it is
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for load in ("file", "broadcast"):
            model = tiny_model(1)  # the same start on every rank
            ddp = torch.nn.parallel.DistributedDataParallel(model)
            opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
            anchor = os.path.join(d, "anchor-%s.safetensors" % load)
            if rank == 0:
                gomerge.save_weights(model, anchor)
            dist.barrier()
            a = gomerge.load_state_dict(anchor)
            sfa = gomerge.SFA(anchor, os.path.join(d, "current-%s.safetensors" % load), steps=6, p=0.5,
                              beta=0.5, binary=binary, load=load)
            x, y = task_data(10 + rank, float(rank))  # each rank its own batch
            for step in range(1, 7):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(ddp(x), y).backward()
                opt.step()
                before = {k: v.clone() for k, v in model.state_dict().items()}
                rep = sfa.maybe_average(model, step)
                if rep is None:
                    continue
                for k, v in model.state_dict().items():
                    if not torch.equal(v, sfa_want(a[k], before[k], 0.5)):
                        raise AssertionError("rank %d, %s, step %d: not beta*a + (1-beta)*c" % (rank, k, step))
            if len(sfa.reports) != 2:
                raise AssertionError("rank %d has %d reports, want 2" % (rank, len(sfa.reports)))
            gomerge.save_state_dict(model.state_dict(), os.path.join(d, "final-%s-%d.safetensors" % (load, rank)))
            # DDP's reducer must go before the process group does, or its destructor
            # waits forever (torch 1.13).
            del ddp, opt
        # BF16 and F16 tensors broadcast (gloo has no bfloat16: they travel as bits),
        # from different values on each rank to rank 0's merge everywhere.
        g = torch.Generator().manual_seed(40)
        a16 = {"w": torch.randn(5, 7, generator=g).bfloat16(), "h": torch.randn(9, generator=g).half()}
        half_anchor = os.path.join(d, "anchor-16.safetensors")
        if rank == 0:
            gomerge.save_state_dict(a16, half_anchor)
        dist.barrier()
        g = torch.Generator().manual_seed(50 + rank)
        live = {"w": torch.randn(5, 7, generator=g).bfloat16(), "h": torch.randn(9, generator=g).half()}
        c0 = {k: v.clone() for k, v in live.items()}
        sfa = gomerge.SFA(half_anchor, os.path.join(d, "current-16.safetensors"), steps=1, p=1, beta=0.25,
                          binary=binary, load="broadcast")
        sfa.average_state_dict(live)
        for v in c0.values():
            dist.broadcast(v.view(-1).view(torch.uint8), 0)  # rank 0's values, for the check
        for k, v in live.items():
            if not torch.equal(bits(v), bits(sfa_want(a16[k], c0[k], 0.25))):
                raise AssertionError("rank %d, %s: not rank 0's merge" % (rank, k))
        # A failed merge on rank 0 raises on every rank, rather than leaving them waiting.
        bad = os.path.join(d, "bad-anchor.safetensors")
        if rank == 0:
            gomerge.save_weights(torch.nn.Linear(3, 3), bad)
        dist.barrier()
        sfa = gomerge.SFA(bad, os.path.join(d, "current-bad.safetensors"), steps=1, p=1, binary=binary)
        try:
            sfa.average_state_dict(tiny_model(1).state_dict())
        except gomerge.GomergeError as e:
            if e.exit_status != 3:
                raise
        else:
            raise AssertionError("rank %d: a failed merge did not raise" % rank)
    finally:
        dist.destroy_process_group()
        faulthandler.cancel_dump_traceback_later()


class DistributedTest(Base):
    """DDP on two CPU processes (gloo): one merge per averaging step for the whole job,
    and every rank ends with bit-identical weights."""

    def test_two_ranks_gloo(self):
        import socket
        import torch.multiprocessing as mp
        # Every gomerge run is logged, to count merges per step across the job.
        log = self.path("runs.log")
        wrapper = self.path("gomerge-wrapper")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\necho "$*" >> %s\nexec %s "$@"\n' % (log, self.bin))
        os.chmod(wrapper, 0o755)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ctx = mp.spawn(_ddp_worker, args=(2, self.dir, wrapper, port), nprocs=2, join=False)
        deadline = time.monotonic() + 180
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                self.fail("the ranks did not finish in 180 s")
        with open(log) as f:
            runs = [line.split() for line in f]
        sfa_runs = [r for r in runs if r[0] == "sfa"]
        # 2 averaging steps x 2 load modes + the 16-bit one + the failing merge: 6
        # merges, not 12.
        self.assertEqual(len(sfa_runs), 6, runs)
        for load in ("file", "broadcast"):
            r0 = gomerge.load_state_dict(self.path("final-%s-0.safetensors" % load))
            r1 = gomerge.load_state_dict(self.path("final-%s-1.safetensors" % load))
            self.assertEqual(set(r0), set(r1))
            for k in r0:
                self.assertTrue(torch.equal(bits(r0[k]), bits(r1[k])), "%s: %s differs between ranks" % (load, k))


class ResumeTest(Base):
    """ContinualRun over three tasks, the trainer killed (SIGKILL) at seeded random
    points, mid-save and mid-merge among them, and restarted each time: it must end bit
    for bit where an uninterrupted run ends."""

    def trainer(self, workdir, out, kill, scratch_dir=None, compress=False):
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, GOMERGE_BIN=self.bin, PYTHONDONTWRITEBYTECODE="1",
                   GOMERGE_TEST_COMPRESS_ANCHORS="1" if compress else "0")
        extra = [scratch_dir] if scratch_dir else []
        return subprocess.run([sys.executable, os.path.join(here, "continual_trainer.py"), workdir, out, kill] + extra,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    def state(self, workdir):
        with open(os.path.join(workdir, "state.json")) as f:
            st = json.load(f)
        for k in ("weights", "anchor", "aux"):
            self.assertTrue(os.path.exists(os.path.join(workdir, st[k])), "state.json names a missing %s" % k)
        return (st["task"], st["step"])

    def test_killed_at_random_points(self):
        ref_out = self.path("ref.safetensors")
        p = self.trainer(self.path("ref"), ref_out, "none")
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        rng = random.Random(20261202)
        # every kind of point at least once, in a seeded random order, then two more
        kinds = ["save", "merge", "commit", "between", "step"]
        rng.shuffle(kinds)
        kinds += [rng.choice(["save", "merge", "step"]) for _ in range(2)]
        spec = {"save": lambda: "save:%d:%d" % (rng.randint(1, 4), rng.randint(1, 4)),
                "merge": lambda: "merge:%d" % rng.randint(1, 3),
                "commit": lambda: "commit:%d" % rng.randint(1, 3),
                "between": lambda: "between:1",
                "step": lambda: "step:%d" % rng.randint(1, 6)}
        work, out, log = self.path("run"), self.path("out.safetensors"), self.path("kills.log")
        # The killed run keeps its scratch in another folder (as on /dev/shm), the
        # reference in its own: both must give the same bits.
        scratch = self.path("scratch")
        os.mkdir(scratch)
        where = []
        for kind in kinds:
            kill = spec[kind]()
            p = self.trainer(work, out, kill, scratch)
            self.assertEqual(p.returncode, -signal.SIGKILL, "%s: %s" % (kill, p.stdout.decode()))
            with open(log) as f:
                last = f.read().splitlines()[-1]
            self.assertTrue(last.startswith(kill + " "), (kill, last))
            self.assertNotIn("already exited", last)
            pos = self.state(work)
            if where:
                self.assertGreaterEqual(pos, where[-1], "the committed position went back")
            where.append(pos)
        self.assertFalse(os.path.exists(out))
        p = self.trainer(work, out, "none", scratch)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        self.assertEqual(self.state(work), (3, 0))
        self.assertEqual(os.listdir(scratch), [], "scratch left behind")
        ref, got = gomerge.load_state_dict(ref_out), gomerge.load_state_dict(out)
        self.assertEqual(set(ref), set(got))
        for k in ref:
            self.assertTrue(torch.equal(bits(ref[k]), bits(got[k])), k)
        leftovers = [n for n in os.listdir(work) if n.startswith((".scratch-", ".weights-", ".aux-"))]
        self.assertEqual(leftovers, [])
        with open(log) as f:
            self.assertEqual(len(f.read().splitlines()), len(kinds))

    def test_compressed_anchors_killed(self):
        """compress_anchors: the same bits as a run with plain anchors, each anchor a
        .gmz smaller than the weights it holds, also when killed while one is being
        compressed, or just after."""
        ref_out = self.path("ref.safetensors")
        p = self.trainer(self.path("ref"), ref_out, "none")
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        work, out, log = self.path("run"), self.path("out.safetensors"), self.path("kills.log")
        kills = ["compress:2", "between:1", "merge:2", "compress:1"]
        for kill in kills:
            p = self.trainer(work, out, kill, compress=True)
            self.assertEqual(p.returncode, -signal.SIGKILL, "%s: %s" % (kill, p.stdout.decode()))
            with open(log) as f:
                last = f.read().splitlines()[-1]
            self.assertTrue(last.startswith(kill + " "), (kill, last))
            self.assertNotIn("already exited", last)
            with open(os.path.join(work, "state.json")) as f:
                st = json.load(f)
            self.assertRegex(st["anchor"], r"^anchor-t00[0-9]\.gmz$")
            anchor, weights = os.path.join(work, st["anchor"]), os.path.join(work, st["weights"])
            self.assertTrue(os.path.exists(anchor), st)
            self.assertLess(os.path.getsize(anchor), os.path.getsize(weights) + 4096)
        p = self.trainer(work, out, "none", compress=True)
        self.assertEqual(p.returncode, 0, p.stdout.decode())
        # anchors compressed by a killed run and never committed are scratch, and the
        # last task's anchor is dropped once the run is done: none is left
        self.assertEqual([n for n in os.listdir(work) if "anchor-t" in n], [])
        ref, got = gomerge.load_state_dict(ref_out), gomerge.load_state_dict(out)
        self.assertEqual(set(ref), set(got))
        for k in ref:
            self.assertTrue(torch.equal(bits(ref[k]), bits(got[k])), k)

    def test_other_runs_folder_is_refused(self):
        model = tiny_model(0)
        gomerge.ContinualRun(self.path("w"), model, 2, 4, p=0.5, binary=self.bin).resume()
        with self.assertRaisesRegex(ValueError, "another run"):
            gomerge.ContinualRun(self.path("w"), model, 2, 5, p=0.5, binary=self.bin).resume()


class ScheduleTest(Base):
    def test_matches_binary(self):
        for steps, p in [(1000, 0.25), (1000, 0.1), (10, 0.01), (7, 0.5), (100, 1), (3, 0.34)]:
            want = gomerge.run(["sfa", "schedule", "--steps", str(steps), "--p", repr(p)], self.bin)
            self.assertEqual(gomerge.schedule(steps, p), want, (steps, p))

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            gomerge.schedule(0, 0.5)
        with self.assertRaises(ValueError):
            gomerge.schedule(10, 0)


class TrainingLoopTest(Base):
    """Task A, then task B with SFA from a plain PyTorch loop, then the anchor rolls."""

    def test_sfa_in_a_torch_loop(self):
        model = tiny_model(1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        xa, ya = task_data(2, 0.0)
        train_steps(model, opt, xa, ya, 30)
        anchor = self.path("task_A.safetensors")
        gomerge.save_state_dict(model.state_dict(), anchor)
        anchor_sd = {k: v.clone() for k, v in model.state_dict().items()}

        sfa = gomerge.SFA(anchor, self.path("current.safetensors"), steps=20, p=0.25, beta=0.5, binary=self.bin)
        self.assertEqual(sfa.schedule, [5, 10, 15, 20])
        self.assertEqual(sfa.schedule_from_binary(), sfa.schedule)
        params_before = [id(p) for p in model.parameters()]
        xb, yb = task_data(3, 1.0)
        checked = []

        def on_step(step):
            before = {k: v.clone() for k, v in model.state_dict().items()}
            rep = sfa.maybe_average(model, step)
            if rep is None:
                self.assertFalse(sfa.is_merge_step(step))
                return
            checked.append(step)
            self.assertEqual(rep["method"], "sfa")
            self.assertTrue(rep["in_place"])
            self.assertEqual(rep["parameters"], {"beta": 0.5})
            self.assertEqual([i["role"] for i in rep["inputs"]], ["anchor", "current"])
            l2 = torch.sqrt(sum(((before[k].double() - anchor_sd[k].double()) ** 2).sum() for k in before)).item()
            self.assertAlmostEqual(rep["l2_before"], l2, delta=1e-6 * max(l2, 1))
            self.assertAlmostEqual(rep["l2_after"], l2 / 2, delta=1e-6 * max(l2, 1))
            for k, v in model.state_dict().items():
                # 0.5·a and 0.5·c are exact in float32, so torch's sum has the same
                # single rounding as gomerge's float32(b·a) + float32(c·x).
                want = 0.5 * anchor_sd[k] + 0.5 * before[k]
                self.assertTrue(torch.equal(v, want), "%s at step %d" % (k, step))

        train_steps(model, opt, xb, yb, 20, on_step)
        self.assertEqual(checked, [5, 10, 15, 20])
        self.assertEqual(len(sfa.reports), 4)
        self.assertEqual([id(p) for p in model.parameters()], params_before,
                         "the optimizer's parameters must stay the same objects")

        # The merge at step T is the next task's anchor.
        nxt = sfa.finish_task(self.path("task_B.safetensors"))
        self.assertEqual(sfa.anchor, nxt)
        with open(nxt, "rb") as a, open(sfa.current, "rb") as c:
            self.assertEqual(a.read(), c.read())
        final = gomerge.load_state_dict(nxt)
        for k, v in model.state_dict().items():
            self.assertTrue(torch.equal(final[k], v), k)

    def test_compressed_anchor_and_history(self):
        """An anchor kept as .gmz gives the same bits as the plain one; keep_history
        stores every merge as a delta against it; finish_task can write the next
        anchor compressed."""
        def task_b(anchor, current, history=None):
            model = tiny_model(1)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            xa, ya = task_data(2, 0.0)
            train_steps(model, opt, xa, ya, 30)
            if not os.path.exists(anchor):
                gomerge.save_state_dict(model.state_dict(), anchor)
            sfa = gomerge.SFA(anchor, current, steps=20, p=0.25, binary=self.bin, keep_history=history)
            xb, yb = task_data(3, 1.0)
            merged = []
            train_steps(model, opt, xb, yb, 20,
                        lambda step: merged.append(sfa.maybe_average(model, step) is not None))
            self.assertEqual(sum(merged), 4)
            return model, sfa

        plain = self.path("task_A.safetensors")
        want, _ = task_b(plain, self.path("plain.safetensors"))
        packed = self.path("task_A.gmz")
        gomerge.run(["compress", plain, packed], self.bin)
        self.assertLess(os.path.getsize(packed), os.path.getsize(plain) + 4096)
        hist = self.path("history")
        got, sfa = task_b(packed, self.path("packed.safetensors"), hist)
        for k, v in want.state_dict().items():
            self.assertTrue(torch.equal(bits(v), bits(got.state_dict()[k])), k)
        self.assertEqual(sorted(os.listdir(hist)), ["%06d.gmz" % i for i in range(1, 5)])
        # the last point of the history is the checkpoint current holds now
        back = self.path("restored.safetensors")
        gomerge.run(["decompress", os.path.join(hist, "000004.gmz"), back, "--against", packed], self.bin)
        with open(back, "rb") as a, open(sfa.current, "rb") as c:
            self.assertEqual(a.read(), c.read())

        nxt = sfa.finish_task(self.path("task_B.gmz"))
        self.assertEqual(sfa.anchor, nxt)
        gomerge.run(["decompress", nxt, self.path("task_B.safetensors")], self.bin)
        with open(self.path("task_B.safetensors"), "rb") as a, open(sfa.current, "rb") as c:
            self.assertEqual(a.read(), c.read())

    def test_fisher_weighted(self):
        model = tiny_model(4)
        anchor = self.path("a.safetensors")
        gomerge.save_state_dict(model.state_dict(), anchor)
        a = {k: v.clone() for k, v in model.state_dict().items()}
        fisher = {k: torch.rand_like(v) for k, v in a.items()}
        fpath = self.path("a_fisher.safetensors")
        gomerge.save_state_dict(fisher, fpath)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        cur = {k: v.clone() for k, v in model.state_dict().items()}
        sfa = gomerge.SFA(anchor, self.path("c.safetensors"), steps=1, p=1, fisher=fpath, eta=1.5, binary=self.bin)
        sfa.maybe_average(model, 1)
        for k, v in model.state_dict().items():
            beta = torch.clamp(1.5 * fisher[k].double(), max=1)
            want = beta * a[k].double() + (1 - beta) * cur[k].double()
            self.assertTrue(torch.allclose(v.double(), want, atol=1e-6), k)


class BufferTest(Base):
    def test_integer_buffers_are_left_alone(self):
        # BatchNorm's num_batches_tracked differs between the anchor and the current
        # model; gomerge would refuse to merge unequal integer tensors, so SFA averages
        # the float tensors only and leaves the counter to the trainer.
        model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = task_data(6, 0.0)
        train_steps(model, opt, x, y, 3)
        anchor = self.path("a.safetensors")
        gomerge.save_weights(model, anchor)
        saved, _ = gomerge.load_file(anchor)
        self.assertNotIn("1.num_batches_tracked", saved)
        self.assertIn("1.running_mean", saved)
        sfa = gomerge.SFA(anchor, self.path("c.safetensors"), steps=4, p=0.5, binary=self.bin)
        train_steps(model, opt, x, y, 4, lambda step: sfa.maybe_average(model, step))
        self.assertEqual(len(sfa.reports), 2)
        self.assertEqual(model.state_dict()["1.num_batches_tracked"].item(), 7)


class ErrorTest(Base):
    def setUp(self):
        super().setUp()
        self.anchor = self.path("a.safetensors")
        gomerge.save_state_dict(tiny_model(0).state_dict(), self.anchor)

    def test_usage_error_is_exit_2(self):
        with self.assertRaises(gomerge.GomergeError) as cm:
            gomerge.run(["sfa", "--anchor", self.anchor, "--current", self.anchor, "--beta", "1.5", "--in-place"], self.bin)
        self.assertEqual(cm.exception.exit_status, 2)
        self.assertIn("--beta", cm.exception.message)
        self.assertIn("usage error", str(cm.exception))

    def test_mismatched_checkpoint_is_exit_3_and_unchanged(self):
        other = torch.nn.Sequential(torch.nn.Linear(4, 9), torch.nn.ReLU(), torch.nn.Linear(9, 3))
        cur = self.path("c.safetensors")
        gomerge.save_state_dict(other.state_dict(), cur)
        with open(cur, "rb") as f:
            before = f.read()
        sfa = gomerge.SFA(self.anchor, cur, steps=10, p=1, binary=self.bin)
        with self.assertRaises(gomerge.GomergeError) as cm:
            sfa.merge()
        self.assertEqual(cm.exception.exit_status, 3)
        self.assertIn("0.weight", cm.exception.message)
        with open(cur, "rb") as f:
            self.assertEqual(f.read(), before, "a failed merge must leave the checkpoint as it was")

    def test_missing_binary(self):
        with self.assertRaises(gomerge.GomergeError) as cm:
            gomerge.run(["version"], self.path("no-such-gomerge"))
        self.assertIsNone(cm.exception.exit_status)


class AdapterTest(Base):
    """The framework adapters, against stand-in modules with the frameworks' class
    names (transformers and Lightning are not installed in CI)."""

    def test_hf_and_lightning_callbacks(self):
        class Callback:
            pass

        fakes = {
            "transformers": types.SimpleNamespace(TrainerCallback=Callback),
            "lightning": types.ModuleType("lightning"),
            "lightning.pytorch": types.SimpleNamespace(Callback=Callback),
        }
        saved = {k: sys.modules.get(k) for k in fakes}
        sys.modules.update(fakes)
        try:
            model = tiny_model(5)
            anchor = self.path("a.safetensors")
            gomerge.save_state_dict(model.state_dict(), anchor)
            sfa = gomerge.SFA(anchor, self.path("c.safetensors"), steps=4, p=0.5, binary=self.bin)
            hf = gomerge.hf_callback(sfa)
            self.assertIsInstance(hf, Callback)
            for step in range(1, 5):
                state = types.SimpleNamespace(global_step=step)
                hf.on_step_end(None, state, "control", model=model)
            self.assertEqual(len(sfa.reports), 2)
            # Lightning calls on_train_batch_end per micro-batch: under gradient
            # accumulation the same global_step comes several times, and is averaged once.
            sfa2 = gomerge.SFA(anchor, self.path("c2.safetensors"), steps=4, p=0.5, binary=self.bin)
            pl = gomerge.lightning_callback(sfa2)
            for batch_idx, step in enumerate([1, 1, 2, 2, 3, 3, 4, 4]):
                pl.on_train_batch_end(types.SimpleNamespace(global_step=step), model, None, None, batch_idx)
            self.assertEqual(len(sfa2.reports), 2)
        finally:
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v


if __name__ == "__main__":
    unittest.main()
