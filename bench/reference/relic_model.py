"""PyTorch eager reference of `icrl bench model`: the same tiny ReLIC policy (token encoder,
pre-norm RMSNorm transformer with a gated GELU MLP, EpisodeRope positions, a SinkKv slot with a
learned key and a zero value, actor and critic heads), the same training step (forward over
[batch, context] trials, loss = mean(logits) + mean(value), backward, zero the gradients) and
the same KV-cache decode loop (a ring cache of `context` entries per slot, filled to
`context - decode_steps` tokens, then single-token decodes with a boolean mask over the whole
capacity through scaled_dot_product_attention), written the way a PyTorch user would write it.

Run with the project's cached Python (scripts/libtorch.sh installs it):

    ~/.cache/icrl/torch-2.11.0/bin/python bench/reference/relic_model.py \
        --batch 64 --context 512 --threads 1 --iters 0 --decode-steps 64

It prints one JSON object with the keys of `icrl bench model` (train_tokens_per_s,
decode_env_steps_per_s, ...). `bench/reference/compare.py` alternates it with the Rust bench.
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

# `icrl bench model`'s observation spec: 16-d vectors, 7 actions; episodes of 500 steps.
VECTOR_DIM = 16
NUM_ACTIONS = 7
EPISODE_LEN = 500


class RmsNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * self.weight


class Rotary:
    """cos/sin tables [B, 1, T, hd/2] of integer positions [B, T] (angles in float64)."""

    def __init__(self, positions, head_dim, base):
        half = head_dim // 2
        i = torch.arange(half, dtype=torch.float64)
        inv_freq = torch.exp(i * (-2.0 * math.log(base) / head_dim))
        angles = positions.double().unsqueeze(-1) * inv_freq
        self.cos = angles.cos().float().unsqueeze(1)
        self.sin = angles.sin().float().unsqueeze(1)

    def apply(self, x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * self.cos - x2 * self.sin, x1 * self.sin + x2 * self.cos], -1)


class Block(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.attn_norm, self.mlp_norm = RmsNorm(d), RmsNorm(d)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.sink_k = nn.Parameter(torch.zeros(heads, self.head_dim))  # SinkKv { k: Learned }
        self.w_gate = nn.Linear(d, hidden, bias=False)
        self.w_up = nn.Linear(d, hidden, bias=False)
        self.w_down = nn.Linear(hidden, d, bias=False)

    def project(self, x, rotary):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.wq(x)), split(self.wk(x)), split(self.wv(x))
        return rotary.apply(q), rotary.apply(k), v

    def merge(self, y):
        b, h, t, hd = y.shape
        return self.wo(y.transpose(1, 2).reshape(b, t, h * hd))

    def mlp(self, x):
        return self.w_down(F.gelu(self.w_gate(x)) * self.w_up(x))

    def sink(self):
        return self.sink_k, torch.zeros_like(self.sink_k)  # v: Zero

    def forward(self, x, rotary):
        q, k, v = self.project(self.attn_norm(x), rotary)
        b, h, t, hd = q.shape
        sink_k, sink_v = self.sink()
        slot = lambda s: s.view(1, h, 1, hd).expand(b, h, 1, hd)
        q = torch.cat([torch.zeros_like(q[:, :, :1]), q], 2)
        k = torch.cat([slot(sink_k), k], 2)
        v = torch.cat([slot(sink_v), v], 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)[:, :, 1:]
        x = x + self.merge(y)
        return x + self.mlp(self.mlp_norm(x))

    def decode(self, x, rotary, cache, layer, slot_idx, entry, mask):
        q, k, v = self.project(self.attn_norm(x), rotary)
        keys, values = cache.keys[layer], cache.values[layer]
        sink_k, sink_v = self.sink()
        h, hd = self.heads, self.head_dim
        keys[:, :, :1].copy_(sink_k.view(1, h, 1, hd))
        values[:, :, :1].copy_(sink_v.view(1, h, 1, hd))
        flat = lambda y: y.permute(0, 2, 1, 3).reshape(-1, h, hd)
        keys[slot_idx, :, entry + 1] = flat(k)
        values[slot_idx, :, entry + 1] = flat(v)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + self.merge(y)
        return x + self.mlp(self.mlp_norm(x))


class KvCache:
    """Keys/values [B, H, 1 + C, hd] per layer (entry 0 = sink), entry positions [B, C]."""

    def __init__(self, layers, batch, heads, head_dim, capacity):
        shape = (batch, heads, 1 + capacity, head_dim)
        self.keys = [torch.zeros(shape) for _ in range(layers)]
        self.values = [torch.zeros(shape) for _ in range(layers)]
        self.entry_position = torch.full((batch, capacity), -1, dtype=torch.long)
        self.entry_episode = torch.zeros((batch, capacity), dtype=torch.long)
        self.lengths = torch.zeros(batch, dtype=torch.long)
        self.capacity = capacity

    def fill_for_benchmark(self, length):
        self.entry_position.fill_(-1)
        self.entry_position[:, :length] = torch.arange(length)
        self.entry_episode.fill_(0)
        self.lengths.fill_(length)


class Policy(nn.Module):
    def __init__(self, layers=2, d=64, heads=8, hidden=256, max_episode_steps=1024):
        super().__init__()
        self.d, self.heads, self.head_dim = d, heads, d // heads
        self.fc1, self.fc2 = nn.Linear(VECTOR_DIM, 64), nn.Linear(64, d)
        self.prev_action = nn.Embedding(NUM_ACTIONS + 1, d)
        self.prev_reward = nn.Linear(1, d)
        self.episode_step = nn.Embedding(max_episode_steps, d)
        self.layers = nn.ModuleList(Block(d, heads, hidden) for _ in range(layers))
        self.norm = RmsNorm(d)
        self.actor, self.critic = nn.Linear(d, NUM_ACTIONS), nn.Linear(d, 1)

    def tokens(self, x):
        token = self.prev_action(x["prev_action"]) + self.prev_reward(x["prev_reward"].unsqueeze(-1))
        return token + self.fc2(F.gelu(self.fc1(x["vector"])))

    def heads_out(self, h):
        return self.actor(h), self.critic(h).squeeze(-1)

    def forward(self, x):
        h = self.tokens(x) + self.episode_step(x["step"])
        rotary = Rotary(x["episode"], self.head_dim, 10_000.0)
        for block in self.layers:
            h = block(h, rotary)
        return self.heads_out(self.norm(h))

    @torch.no_grad()
    def decode(self, cache, x):
        b, t = x["prev_action"].shape
        position = cache.lengths.unsqueeze(1) + torch.arange(t).unsqueeze(0)  # [B, t]
        slot_idx = torch.arange(b).repeat_interleave(t)
        entry = position.remainder(cache.capacity).reshape(-1)
        h = self.tokens(x) + self.episode_step(x["step"])
        rotary = Rotary(x["episode"], self.head_dim, 10_000.0)
        cache.entry_position[slot_idx, entry] = position.reshape(-1)
        cache.entry_episode[slot_idx, entry] = x["episode"].reshape(-1)
        entry_pos = cache.entry_position.unsqueeze(1)
        query_pos = position.unsqueeze(2)
        mask = (entry_pos >= 0) & (entry_pos <= query_pos) & (entry_pos > query_pos - cache.capacity)
        mask = torch.cat([torch.ones(b, t, 1, dtype=torch.bool), mask], 2).unsqueeze(1)
        for layer, block in enumerate(self.layers):
            h = block.decode(h, rotary, cache, layer, slot_idx, entry, mask)
        cache.lengths += t
        return self.heads_out(self.norm(h))


def inputs(b, t):
    steps = torch.arange(t)
    return {
        "vector": torch.randn(b, t, VECTOR_DIM),
        "prev_action": torch.randint(NUM_ACTIONS + 1, (b, t)),
        "prev_reward": torch.randn(b, t),
        "episode": (steps // EPISODE_LEN).expand(b, t).contiguous(),
        "step": (steps % EPISODE_LEN).expand(b, t).contiguous(),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--warmup", type=int, default=1, help="untimed training iterations")
    p.add_argument("--iters", type=int, default=2, help="timed training iterations (0: none)")
    p.add_argument("--decode-steps", type=int, default=64, help="timed decode steps (0: none)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Policy(a.layers, a.d_model, a.heads, 4 * a.d_model)
    b, n = a.batch, a.context
    report = {
        "bench": "model-pytorch-eager", "torch": torch.__version__, "layers": a.layers,
        "d_model": a.d_model, "heads": a.heads, "context": n, "batch": b,
        "threads": torch.get_num_threads(),
    }
    if a.iters > 0:
        x = inputs(b, n)
        params = list(model.parameters())

        def train_step():
            logits, value = model(x)
            (logits.mean() + value.mean()).backward()
            for q in params:
                q.grad.zero_()

        for _ in range(a.warmup):
            train_step()
        start = time.perf_counter()
        for _ in range(a.iters):
            train_step()
        secs = time.perf_counter() - start
        report["train_seconds_per_iter"] = secs / a.iters
        report["train_tokens_per_s"] = b * n * a.iters / secs
    if a.decode_steps > 0:
        steps = a.decode_steps
        cache = KvCache(a.layers, b, a.heads, a.d_model // a.heads, n)
        cache.fill_for_benchmark(max(n - steps, 0))
        x = inputs(b, 1)
        model.decode(cache, x)  # warm-up
        start = time.perf_counter()
        for _ in range(1, steps):
            model.decode(cache, x)
        secs = max(time.perf_counter() - start, 1e-9)
        timed = max(steps - 1, 1)
        report["decode_steps_per_s"] = timed / secs
        report["decode_env_steps_per_s"] = timed * b / secs
    print(json.dumps(report))


if __name__ == "__main__":
    main()
