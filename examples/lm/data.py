"""The four corpora of the experiment, read from files every Debian machine with Go has.

  english  README, NEWS, FAQ, INTRO and TODO files under /usr/share/doc (pretraining)
  math     synthetic additions "a+b=c\\n" (task 1)
  law      the license texts under /usr/share/common-licenses (task 2)
  code     Go standard-library source from $GOROOT/src (task 3)

Every split is a pure function of the files and the seed-free rules below, so two runs on
the same machine see the same bytes. Text is byte-level: a "character" is a byte, and
bits per character are bits per byte (the corpora are almost all ASCII).
"""

import gzip
import os
import random
import re
import subprocess

DOC_DIR = "/usr/share/doc"
LICENSE_DIR = "/usr/share/common-licenses"
DOC_NAMES = re.compile(r"^(README|NEWS|FAQ|INTRO|TODO)([.\-_].*)?$")
# Package documentation quotes licences ("WITHOUT ANY WARRANTY ..."). The law task must
# be new to the pretrained model, so paragraphs that look like licence text are dropped.
LEGALESE = re.compile(r"warrant|licen[cs]|copyright|redistribut|GNU General|free software", re.I)
# The Go packages the code task reads: widely used, hand-written (no generated tables).
GO_PACKAGES = [
    "bufio", "bytes", "container/heap", "container/list", "container/ring", "errors",
    "flag", "fmt", "io", "log", "net/url", "os", "path", "path/filepath", "sort",
    "strconv", "strings", "sync", "text/tabwriter", "text/template", "text/template/parse",
    "time", "unicode/utf8", "encoding/json", "encoding/csv", "encoding/binary",
    "encoding/base64", "encoding/hex", "math/big", "regexp", "regexp/syntax",
]
BLOCK = 2048     # split unit: every HELDOUT_EVERY-th block of a corpus is held out
HELDOUT_EVERY = 10


class Domain:
    """A corpus split into training and held-out bytes."""

    def __init__(self, name, train, heldout):
        self.name, self.train, self.heldout = name, train, heldout

    def __repr__(self):
        return "Domain(%s, train %d B, held-out %d B)" % (self.name, len(self.train), len(self.heldout))


def split_blocks(text):
    """Deterministic split: blocks of BLOCK bytes, every HELDOUT_EVERY-th held out."""
    train, held = [], []
    for i in range(0, len(text), BLOCK):
        (held if (i // BLOCK) % HELDOUT_EVERY == HELDOUT_EVERY - 1 else train).append(text[i:i + BLOCK])
    return b"".join(train), b"".join(held)


def _read(path):
    with open(path, "rb") as f:
        raw = f.read()
    return gzip.decompress(raw) if path.endswith(".gz") else raw


def _ascii(text):
    # Keep the byte vocabulary dominated by ASCII; non-ASCII is rare in these files.
    return bytes(b for b in text if b == 10 or 32 <= b < 127)


def english(limit):
    """Package documentation prose, licence paragraphs removed, at most limit bytes."""
    out, total = [], 0
    for pkg in sorted(os.listdir(DOC_DIR)):
        d = os.path.join(DOC_DIR, pkg)
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if not DOC_NAMES.match(name) or not os.path.isfile(p):
                continue
            try:
                text = _read(p).decode("utf-8", "replace")
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
            paras = [q.strip() for q in re.split(r"\n\s*\n", text)]
            keep = [q for q in paras if q and not LEGALESE.search(q)]
            chunk = _ascii(("\n\n".join(keep) + "\n\n").encode("utf-8"))
            out.append(chunk)
            total += len(chunk)
            if total >= limit:
                return b"".join(out)[:limit]
    return b"".join(out)[:limit]


def law():
    """The licence texts, each once (GPL, LGPL and GFDL are symlinks to a version)."""
    seen, out = set(), []
    for name in sorted(os.listdir(LICENSE_DIR)):
        real = os.path.realpath(os.path.join(LICENSE_DIR, name))
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        out.append(_ascii(_read(real)) + b"\n\n")
    return b"".join(out)


def goroot():
    root = os.environ.get("GOROOT")
    if root:
        return root
    try:
        return subprocess.run(["go", "env", "GOROOT"], stdout=subprocess.PIPE, check=True).stdout.decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "/usr/local/go"


def code(limit):
    """Non-test Go files of GO_PACKAGES in path order, at most limit bytes."""
    src = os.path.join(goroot(), "src")
    out, total = [], 0
    for pkg in GO_PACKAGES:
        d = os.path.join(src, pkg)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith(".go") or name.endswith("_test.go"):
                continue
            chunk = _ascii(_read(os.path.join(d, name))) + b"\n"
            out.append(chunk)
            total += len(chunk)
            if total >= limit:
                return b"".join(out)[:limit]
    return b"".join(out)[:limit]


# --- math: a+b=c with 0 <= a, b < 100 ---------------------------------------------------

MATH_MAX = 100
MATH_HELDOUT = 500  # distinct (a, b) pairs never seen in training


def math_pairs():
    """(train pairs, held-out pairs): a fixed shuffle of all 10,000 pairs."""
    pairs = [(a, b) for a in range(MATH_MAX) for b in range(MATH_MAX)]
    random.Random(20250109).shuffle(pairs)
    return pairs[MATH_HELDOUT:], pairs[:MATH_HELDOUT]


def problem(a, b):
    return "%d+%d=%d\n" % (a, b, a + b)


def math(n_train):
    """A training stream of n_train problems over the training pairs, and the held-out
    stream (each held-out pair once)."""
    train_pairs, held_pairs = math_pairs()
    rng = random.Random(7)
    train = "".join(problem(*rng.choice(train_pairs)) for _ in range(n_train))
    held = "".join(problem(a, b) for a, b in held_pairs)
    return train.encode(), held.encode()


def load(english_limit, code_limit, math_train):
    """All four domains, keyed by name."""
    doms = {}
    doms["english"] = Domain("english", *split_blocks(english(english_limit)))
    doms["math"] = Domain("math", *math(math_train))
    doms["law"] = Domain("law", *split_blocks(law()))
    doms["code"] = Domain("code", *split_blocks(code(code_limit)))
    for d in doms.values():
        if len(d.train) < 4096 or len(d.heldout) < 1024:
            raise RuntimeError("corpus %s is too small (%r): are the files installed?" % (d.name, d))
    return doms


if __name__ == "__main__":
    for d in load(1 << 20, 1 << 20, 20000).values():
        print(d, repr(d.train[:120]))
