"""Tests of gomerge.py against the real gomerge binary ($GOMERGE_BIN) with torch.

Run by integrations/python/python_test.go; by hand:
    GOMERGE_BIN=/path/to/gomerge /usr/bin/python3 -m unittest -v test_gomerge
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
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
