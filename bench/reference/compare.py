"""Side-by-side speed of `icrl bench model` and its PyTorch eager reference (relic_model.py).

For each round and each thread count, the Rust bench and the Python reference run one after
the other (alternating which goes first), each as a fresh process with OMP_NUM_THREADS set to
the thread count. Every round is printed, then per thread count the medians and the median of
the per-round ratios (icrl / PyTorch). `make bench-compare` runs it; see the Makefile for the
knobs (ROUNDS, THREADS, WORK, CONTEXT, BATCH).

The Rust keys compared (all from one `icrl bench model` JSON line):
  decode: fused_decode_env_steps_per_s (the fused Rust decode path) and decode_env_steps_per_s
          (libtorch); the reference reports decode_env_steps_per_s.
  train:  train_tokens_per_s on both sides; at more than one thread also `icrl bench model
          --replicas T` (T data-parallel model copies, one libtorch thread each, the batch
          split between them: `runtime.update_replicas`), shown as icrl-replicas.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def last_json(text, what):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"{what}: no JSON line in its output:\n{text}")


def run(cmd, threads, what, extra_env=None):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    env.update(extra_env or {})
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{what} failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return last_json(p.stdout, what)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--icrl", default="target/release/icrl")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--work", choices=["decode", "train"], default="decode")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--batch", type=int, default=None, help="default: 64 (decode), 16 (train)")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--decode-steps", type=int, default=128)
    p.add_argument("--iters", type=int, default=2)
    a = p.parse_args()
    decode = a.work == "decode"
    batch = a.batch or (64 if decode else 16)
    shape = ["--context", str(a.context), "--batch", str(batch), "--heads", str(a.heads)]
    if decode:
        work = ["--iters", "0", "--decode-steps", str(a.decode_steps)]
        keys = [("fused", "fused_decode_env_steps_per_s"), ("libtorch", "decode_env_steps_per_s")]
        ref_key, unit = "decode_env_steps_per_s", "env steps/s"
    else:
        work = ["--iters", str(a.iters), "--decode-steps", "0"]
        keys = [("libtorch", "train_tokens_per_s")]
        ref_key, unit = "train_tokens_per_s", "tokens/s"
    rust_cmd = [a.icrl, "bench", "model", *shape, *work]
    py_cmd = [a.python, os.path.join(HERE, "relic_model.py"), *shape, *work]
    threads = [int(t) for t in a.threads.split(",")]
    print(f"# {a.work}, context {a.context}, batch {batch}, heads {a.heads}, {unit}")
    print(f"# rust:    OMP_NUM_THREADS=T {' '.join(rust_cmd)}")
    print(f"# pytorch: OMP_NUM_THREADS=T {' '.join(py_cmd)} --threads T")
    def keys_at(t):
        if decode or t == 1:
            return keys
        return keys + [("replicas", "train_tokens_per_s")]

    results = {t: {"pytorch": [], **{name: [] for name, _ in keys_at(t)}} for t in threads}
    for r in range(a.rounds):
        for t in threads:
            jobs = [("rust", rust_cmd), ("pytorch", py_cmd + ["--threads", str(t)])]
            if not decode and t > 1:
                jobs.append(("rust-replicas", rust_cmd + ["--replicas", str(t)]))
            if r % 2 == 1:
                jobs.reverse()
            out = {name: run(cmd, t, name) for name, cmd in jobs}
            results[t]["pytorch"].append(out["pytorch"][ref_key])
            cells = [f"pytorch {out['pytorch'][ref_key]:10.0f}"]
            for name, key in keys_at(t):
                src = "rust-replicas" if name == "replicas" else "rust"
                v = out[src].get(key)
                if v is None:
                    sys.exit(f"icrl bench model printed no {key}: {out[src]}")
                results[t][name].append(v)
                cells.append(f"icrl-{name} {v:10.0f} ({v / out['pytorch'][ref_key]:5.2f}x)")
            print(f"round {r + 1} threads {t}: " + "  ".join(cells), flush=True)
    print("# medians")
    for t in threads:
        ref = results[t]["pytorch"]
        cells = [f"pytorch {statistics.median(ref):10.0f}"]
        for name, _ in keys_at(t):
            xs = results[t][name]
            ratios = [x / y for x, y in zip(xs, ref)]
            cells.append(
                f"icrl-{name} {statistics.median(xs):10.0f} "
                f"(median ratio {statistics.median(ratios):5.2f}x)"
            )
        print(f"threads {t}: " + "  ".join(cells))
    if len(threads) > 1:
        lo, hi = threads[0], threads[-1]
        for name in ["pytorch"] + [n for n, _ in keys]:
            ratios = [x / y for x, y in zip(results[hi][name], results[lo][name])]
            print(f"# {name}: {hi} threads / {lo} thread, median of rounds: "
                  f"{statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
