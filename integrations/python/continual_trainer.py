"""A small continual trainer for test_gomerge.ResumeTest: three tasks of SFA through
gomerge.ContinualRun, with a stateful optimizer, a BatchNorm counter and batches drawn
from torch's RNG, killed (SIGKILL) at a chosen point and restarted.

    continual_trainer.py WORKDIR OUT KILL [SCRATCH_DIR]

KILL is "none" or KIND:N[:W]: SIGKILL this process
    step:N     after the N-th optimizer step of this process
    save:N:W   in the N-th atomic file write, at its W-th write() call (mid-save)
    merge:N    while the N-th gomerge merge runs (gomerge started, not finished)
    commit:N   just before the N-th state.json is written (files saved, not committed)
    between:N  just after the N-th finish_task (between tasks)
    compress:N while the N-th gomerge compress runs (an anchor being compressed)
With $GOMERGE_TEST_COMPRESS_ANCHORS=1 the run keeps its anchors compressed
(ContinualRun's compress_anchors).
Before killing itself it appends the point to WORKDIR/../kills.log, so the test can
check that the kill happened where it was meant to. Without a kill, the final
state_dict goes to OUT. Needs $GOMERGE_BIN.
"""

import os
import signal
import subprocess
import sys

import torch

import gomerge

TASKS = ["a", "b", "c"]
STEPS = [8, 6, 8]


def main(workdir, out, kill, scratch_dir=None):
    kind, n, w = (kill.split(":") + ["0", "0"])[:3] if kill != "none" else ("none", "0", "0")
    n, w = int(n), int(w)
    count = {"step": 0, "save": 0, "merge": 0, "commit": 0, "between": 0, "compress": 0}
    log = os.path.join(os.path.dirname(os.path.abspath(workdir)), "kills.log")

    def die(what):
        with open(log, "a") as f:
            f.write("%s %s\n" % (kill, what))
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    def hit(k, what=""):
        count[k] += 1
        if kind == k and count[k] == n:
            die(what or k)

    real_write = gomerge._write_atomically

    def write_atomically(path, write, fsync=True):
        if os.path.basename(path) == "state.json":
            hit("commit")
        count["save"] += 1
        if kind != "save" or count["save"] != n:
            return real_write(path, write, fsync)

        class KillingFile:
            def __init__(self, f):
                self.f, self.calls = f, 0

            def write(self, b):
                self.calls += 1
                if self.calls >= w:
                    self.f.flush()
                    die("save of %s, write %d, %d bytes in the temp file" % (os.path.basename(path), self.calls, self.f.tell()))
                return self.f.write(b)

            def __getattr__(self, a):
                return getattr(self.f, a)

        return real_write(path, lambda f: write(KillingFile(f)), fsync)

    real_run = gomerge.run

    def run(args, binary=None, timeout=None):
        if args and args[0] in ("sfa", "compress"):
            k = "merge" if args[0] == "sfa" else "compress"
            count[k] += 1
            if kind == k and count[k] == n:
                argv = [gomerge.find_binary(binary)] + list(args) + ["--json"]
                proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if proc.poll() is None:
                    die("%s, gomerge pid %d running" % (k, proc.pid))
                die("%s, but gomerge had already exited" % k)  # the test rejects this
        return real_run(args, binary, timeout)

    gomerge._write_atomically = write_atomically
    gomerge.run = run

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cr = gomerge.ContinualRun(workdir, model, TASKS, STEPS, p=0.25, beta=0.5, optimizer=opt, scratch_dir=scratch_dir,
                              compress_anchors=os.environ.get("GOMERGE_TEST_COMPRESS_ANCHORS") == "1")
    cr.resume()
    while not cr.done:
        g = torch.Generator().manual_seed(100 + cr.task)
        x = torch.randn(64, 4, generator=g) + cr.task
        y = (x[:, 0] > cr.task).long() + (x[:, 1] > cr.task).long()
        for step in range(cr.step + 1, cr.task_steps + 1):
            idx = torch.randint(0, 64, (16,))  # torch's RNG: restored on resume
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            hit("step")
            cr.after_step(step)
        cr.finish_task()
        hit("between")
    gomerge.save_state_dict(model.state_dict(), out)


if __name__ == "__main__":
    main(*sys.argv[1:5])
