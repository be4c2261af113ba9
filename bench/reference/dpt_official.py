"""Training speed of the official DPT code's model and training step, for `compare_dpt.py`.

This file contains none of the official code: it imports `net.Transformer` from a clone of
the official repository (https://github.com/jon--lee/decision-pretrained-transformer; pass
its folder with --repo) and times the step its `train.py` runs on every batch: the forward,
`CrossEntropyLoss(reduction='sum')` against the optimal action repeated at every position,
`zero_grad`, `backward`, `AdamW(lr, weight_decay=1e-4).step()`. The batch is random data of
the dataset's shapes and dtypes for Dark Room (states 2, actions 5, one-hot actions, float
tensors), drawn once: data loading is not timed, which can only make the reference look
faster. The official model is `transformers.GPT2Model` (the repository pins transformers
4.5.1) with `n_head=1` whatever `--head` says (its `net.py` hard-codes it), `n_positions =
4 (1 + horizon)`, and `horizon + 1` tokens per example (the query and the context).

Prints one JSON line: train_tokens_per_s (examples x (horizon + 1) tokens per second),
step_ms, and the sizes, as `icrl train` reports DPT's tokens/s.

  PYTHONPATH=<transformers 4.5.1> python dpt_official.py --repo DPT_CLONE --threads 1
"""

import argparse
import json
import os
import sys
import time
import types


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", required=True, help="a clone of the official DPT repository")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--embd", type=int, default=64)
    p.add_argument("--head", type=int, default=4, help="passed on; net.py uses 1 head")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=200, help="timed steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    # net.py imports IPython's `embed` for debugging only.
    if "IPython" not in sys.modules:
        try:
            import IPython  # noqa: F401
        except ImportError:
            stub = types.ModuleType("IPython")
            stub.embed = lambda *args, **kwargs: None
            sys.modules["IPython"] = stub
    sys.path.insert(0, os.path.abspath(a.repo))
    import net  # the official repository's net.py

    state_dim, action_dim = 2, 5  # Dark Room, as the official train.py sets them
    config = {
        "horizon": a.horizon,
        "state_dim": state_dim,
        "action_dim": action_dim,
        "n_layer": a.layers,
        "n_embd": a.embd,
        "n_head": a.head,
        "dropout": a.dropout,
        "test": False,
    }
    model = net.Transformer(config).to("cpu")
    torch.manual_seed(0)
    b, h = a.batch, a.horizon
    one_hot = lambda idx: torch.nn.functional.one_hot(idx, action_dim).float()  # noqa: E731
    batch = {
        "query_states": torch.randint(0, 10, (b, state_dim)).float(),
        "context_states": torch.randint(0, 10, (b, h, state_dim)).float(),
        "context_actions": one_hot(torch.randint(0, action_dim, (b, h))),
        "context_next_states": torch.randint(0, 10, (b, h, state_dim)).float(),
        "context_rewards": torch.randint(0, 2, (b, h, 1)).float(),
        "optimal_actions": one_hot(torch.randint(0, action_dim, (b,))),
        "zeros": torch.zeros(b, state_dim**2 + action_dim + 1),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")

    def step():
        true_actions = batch["optimal_actions"]
        pred_actions = model(batch)
        true_actions = true_actions.unsqueeze(1).repeat(1, pred_actions.shape[1], 1)
        true_actions = true_actions.reshape(-1, action_dim)
        pred_actions = pred_actions.reshape(-1, action_dim)
        optimizer.zero_grad()
        loss = loss_fn(pred_actions, true_actions)
        loss.backward()
        optimizer.step()
        return loss.item()

    model.train()
    for _ in range(a.warmup):
        step()
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    secs = time.perf_counter() - start
    tokens = a.steps * b * (h + 1)
    print(
        json.dumps(
            {
                "reference": "official DPT net.Transformer + train.py step",
                "threads": a.threads,
                "batch": b,
                "tokens_per_example": h + 1,
                "layers": a.layers,
                "embd": a.embd,
                "heads_used": 1,
                "steps": a.steps,
                "step_ms": 1000.0 * secs / a.steps,
                "train_tokens_per_s": tokens / secs,
            }
        )
    )


if __name__ == "__main__":
    main()
