"""A small byte-level transformer language model and its metrics, in plain torch."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class LM(nn.Module):
    """Pre-norm decoder: byte embedding (tied with the output layer), learned
    positions, `layers` blocks of causal self-attention and a 4x MLP."""

    def __init__(self, d, layers, heads, ctx):
        super().__init__()
        self.ctx = ctx
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        # Not persistent: the mask is no weight, and -inf must stay out of checkpoints
        # (gomerge would average it and report an infinite distance).
        self.register_buffer("mask", torch.triu(torch.full((ctx, ctx), float("-inf")), 1), persistent=False)

    def forward(self, x):
        n = x.shape[1]
        h = self.tok(x) + self.pos.weight[:n]
        for b in self.blocks:
            h = b(h, self.mask[:n, :n])
        return self.ln(h) @ self.tok.weight.T

    def loss(self, batch):
        """Mean next-byte cross-entropy (nats) of a (B, ctx+1) uint8/long batch."""
        logits = self(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def windows(text, ctx, n=None):
    """Non-overlapping (ctx+1)-byte windows of text (the last byte of one window is the
    first of the next), at most n of them: the fixed held-out set of a domain."""
    t = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    k = (len(t) - 1) // ctx
    if n is not None:
        k = min(k, n)
    return torch.stack([t[i * ctx:i * ctx + ctx + 1] for i in range(k)])


@torch.no_grad()
def bits_per_char(model, wins, batch=64):
    """Mean cross-entropy over every predicted byte of wins, in bits."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(wins), batch):
        w = wins[i:i + batch]
        logits = model(w[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, VOCAB), w[:, 1:].reshape(-1), reduction="sum").item()
        count += w[:, 1:].numel()
    model.train()
    return total / count / math.log(2)


def math_prompts(heldout, k):
    """For each held-out problem "a+b=c\\n": the k bytes of the held-out stream that end
    at its "=" (so the model sees the previous problems, as in training), and c."""
    prompts, answers = [], []
    start = 0
    while True:
        eq = heldout.find(b"=", start)
        if eq < 0:
            break
        nl = heldout.find(b"\n", eq)
        if eq + 1 >= k:
            prompts.append(heldout[eq + 1 - k:eq + 1])
            answers.append(heldout[eq + 1:nl])
        start = nl + 1
    return prompts, answers


@torch.no_grad()
def math_accuracy(model, prompts, answers, max_len=4):
    """Exact-match accuracy of greedily generated answers (up to max_len digits, stopped
    at a newline)."""
    model.eval()
    x = torch.tensor([list(p) for p in prompts], dtype=torch.long)
    outs = [bytearray() for _ in prompts]
    done = [False] * len(prompts)
    for _ in range(max_len + 1):
        nxt = model(x[:, -model.ctx:])[:, -1].argmax(-1)
        for i, c in enumerate(nxt.tolist()):
            if not done[i]:
                if c == 10:
                    done[i] = True
                else:
                    outs[i].append(c)
        x = torch.cat([x, nxt[:, None]], 1)
    model.train()
    return sum(bytes(o) == a for o, a in zip(outs, answers)) / len(answers)


def empirical_fisher(model, wins):
    """Diagonal empirical Fisher: the mean over windows of the squared gradient of the
    window's mean log-loss, one backward pass per window."""
    params = dict(model.named_parameters())
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    for w in wins:
        model.zero_grad()
        model.loss(w[None]).backward()
        for k, v in params.items():
            fisher[k] += v.grad.detach() ** 2
    model.zero_grad()
    return {k: v / len(wins) for k, v in fisher.items()}
