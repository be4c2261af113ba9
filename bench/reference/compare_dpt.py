"""Side-by-side DPT training speed: `icrl bench train` on a DPT config vs the official DPT code.

Every round runs, each as a fresh process and in an order that rotates from round to round:
the official code's model and training step (`dpt_official.py`, which imports `net.py` from
a clone of the official repository) at each thread count, and `icrl bench train --config
CONFIG` at each thread count and with `runtime.update_replicas` = the thread count (one
libtorch thread per replica). Every round is printed, then per setting the median
tokens/s, and the median over rounds of each icrl setting's ratio to the official code at
the same number of cores, and to the official code's fastest thread count of that round.
`make bench-compare-dpt` runs it.

icrl keeps freed memory in glibc's heap for reuse (src/main.rs sets the mmap, trim and top-pad
thresholds); any Python process can get the same with glibc's environment tunables, so the
official code also runs once more at the largest thread count with those same settings
("official tT malloc") and icrl's ratio to it is printed too.

The sizes (default: configs/darkroom_dpt.ron's) are passed to the reference; every icrl run's
JSON must report the same batch, tokens per example, layers and width, or the script stops.
"""

import argparse
import os
import statistics
import sys

from compare import run

HERE = os.path.dirname(os.path.abspath(__file__))

# The allocator settings of icrl's main (keep_freed_memory_for_reuse), as glibc tunables.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(1024 << 20),
              "MALLOC_TOP_PAD_": str(64 << 20)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--icrl", default="target/release/icrl")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--repo", required=True, help="a clone of the official DPT repository")
    p.add_argument("--pythonpath", default="", help="where transformers 4.5.1 is installed")
    p.add_argument("--config", default="configs/darkroom_dpt.ron")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--steps", type=int, default=200, help="timed optimiser steps per run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--horizon", type=int, default=100, help="context transitions")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--embd", type=int, default=64)
    p.add_argument("--head", type=int, default=4)
    a = p.parse_args()
    threads = [int(t) for t in a.threads.split(",")]

    # The model and batch sizes of darkroom_dpt.ron; each run's JSON is checked against them.
    sizes = {"batch": a.batch, "horizon": a.horizon, "layers": a.layers, "embd": a.embd,
             "head": a.head}
    ref = [a.python, os.path.join(HERE, "dpt_official.py"), "--repo", a.repo,
           "--steps", str(a.steps)]
    for k, v in sizes.items():
        ref += [f"--{k}", str(v)]
    rust = [a.icrl, "bench", "train", "--config", a.config, "--steps", str(a.steps)]
    settings = []
    for t in threads:
        settings.append((f"official t{t}", t, ref + ["--threads", str(t)], "ref"))
    settings.append((f"official t{max(threads)} malloc", max(threads),
                     ref + ["--threads", str(max(threads))], "ref_malloc"))
    for t in threads:
        settings.append((f"icrl t{t}", t, rust + [
            "--set", f"runtime.torch_threads={t}", "--set", "runtime.update_replicas=1"], "rust"))
        if t > 1:
            settings.append((f"icrl r{t}", t, rust + [
                "--set", "runtime.torch_threads=1", "--set", f"runtime.update_replicas={t}"], "rust"))
    print(f"# DPT training tokens/s, sizes {sizes}, {a.steps} steps per run")
    print(f"# official: OMP_NUM_THREADS=T {' '.join(ref)} --threads T")
    print(f"# icrl:     OMP_NUM_THREADS=T {' '.join(rust)} --set runtime.torch_threads=T "
          "--set runtime.update_replicas=1 (rT: torch_threads=1, update_replicas=T)")
    extra = {"PYTHONPATH": a.pythonpath} if a.pythonpath else {}
    results = {name: [] for name, *_ in settings}
    best_ref = []
    for r in range(a.rounds):
        order = settings[r % len(settings):] + settings[:r % len(settings)]
        row = {}
        for name, t, cmd, kind in order:
            env = {"ref": extra, "ref_malloc": {**extra, **MALLOC_ENV}}.get(kind)
            out = run(cmd, t, name, env)
            got = (out["batch"], out["tokens_per_example"], out["layers"],
                   out.get("d_model", out.get("embd")))
            want = (a.batch, a.horizon + 1, a.layers, a.embd)
            if got != want:
                sys.exit(f"{name}: sizes {got} (batch, tokens, layers, width), expected {want}")
            row[name] = out["train_tokens_per_s"]
            results[name].append(row[name])
        best_ref.append(max(row[f"official t{t}"] for t in threads))
        print(f"round {r + 1}: " + ", ".join(f"{n} {row[n]:.0f}" for n, *_ in settings))
    print("\nmedians (tokens/s):")
    for name, *_ in settings:
        print(f"  {name:<20} {statistics.median(results[name]):10.0f}")
    print("median ratio over rounds, icrl / official:")
    for name, t, _, kind in settings:
        if kind != "rust":
            continue
        same = [x / y for x, y in zip(results[name], results[f"official t{t}"])]
        best = [x / y for x, y in zip(results[name], best_ref)]
        print(f"  {name:<12} vs official t{t}: {statistics.median(same):.2f} "
              f"(rounds {', '.join(f'{v:.2f}' for v in same)}); "
              f"vs the official code's fastest: {statistics.median(best):.2f}")
        tuned = f"official t{t} malloc"
        if tuned in results:
            ratios = [x / y for x, y in zip(results[name], results[tuned])]
            print(f"  {name:<12} vs {tuned}: {statistics.median(ratios):.2f} "
                  f"(rounds {', '.join(f'{v:.2f}' for v in ratios)})")


if __name__ == "__main__":
    main()
