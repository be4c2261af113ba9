"""Summary of scripts/gpu_check.sh: reads OUTDIR/parts.jsonl and each part's JSON, writes
OUTDIR/gpu_check.json (every part's status, time and numbers, plus derived comparisons) and
OUTDIR/gpu_check.md (a table). Exit code 0 when every part passed or was skipped."""
import glob
import json
import os
import sys

out, device, tiny = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
parts = [json.loads(l) for l in open(os.path.join(out, "parts.jsonl")) if l.strip()]
for p in parts:
    try:
        p["result"] = json.load(open(os.path.join(out, p["part"] + ".json")))
    except (OSError, ValueError):
        p["result"] = {}
by = {p["part"]: p for p in parts}
derived = {}
for name, p in by.items():
    if name.startswith("bench_"):
        n = name[len("bench_"):]
        ours = p["result"].get("attention_fwd_bwd_tflops_per_s")
        ref = by.get("sdpa_" + n, {}).get("result", {}).get("fwd_bwd_tflops_per_s")
        if ours and ref:
            derived["attention_over_pytorch_flash_" + n] = ours / ref
# The 64k run: the plan for its budget against its measured peak, and what it wrote.
train = by.get("train_64k", {})
plan = by.get("plan_train_64k", {}).get("result", {})
peak = train.get("result", {}).get("peak_allocated_bytes") or train.get("result", {}).get("peak_rss_delta_bytes")
if plan.get("peak_bytes") and peak:
    derived["train_64k_peak_over_plan"] = peak / plan["peak_bytes"]
runs = glob.glob(os.path.join(out, "runs", "house", "*"))
if runs:
    derived["train_64k_checkpoints"] = sorted(os.path.basename(f) for f in glob.glob(os.path.join(runs[0], "checkpoints", "*")))
    derived["train_64k_eval_json"] = sorted(os.path.basename(f) for f in glob.glob(os.path.join(runs[0], "eval", "*.json")))
    if train.get("status") == "ok" and not (derived["train_64k_checkpoints"] and derived["train_64k_eval_json"]):
        train["status"] = "failed"
        train["reason"] = "no checkpoint or no eval JSON written"
dark, dark_cpu = by.get("darkroom", {}).get("result", {}), by.get("darkroom_cpu", {}).get("result", {})
if dark.get("env_steps_per_s") and dark_cpu.get("env_steps_per_s"):
    derived["darkroom_device_over_cpu_env_steps_per_s"] = dark["env_steps_per_s"] / dark_cpu["env_steps_per_s"]
ok = all(p["status"] in ("ok", "skipped") for p in parts)
summary = {"device": device, "tiny": tiny, "passed": ok, "parts": parts, "derived": derived}
tmp = os.path.join(out, "gpu_check.json.tmp")
json.dump(summary, open(tmp, "w"), indent=1, sort_keys=True)
os.replace(tmp, os.path.join(out, "gpu_check.json"))

KEYS = ["libtorch", "gpus", "attention_backend_4k", "attention_backend_64k", "train_tokens_per_s",
        "decode_env_steps_per_s", "train_peak_bytes", "plan_train_bytes", "train_peak_over_plan",
        "train_tflops_per_s", "train_fraction_of_peak", "peak_tflops_used",
        "attention_share_of_train_step", "attention_fwd_bwd_tflops_per_s", "fwd_bwd_tflops_per_s",
        "peak_gib", "peak_moment", "peak_allocated_bytes", "peak_rss_delta_bytes", "env_steps_per_s",
        "update_share", "sampling_share", "refresh_share", "passed"]
lines = [f"# GPU check ({device}{', tiny' if tiny else ''})", "",
         "| part | status | seconds | figures |", "|---|---|---|---|"]
for p in parts:
    r = p["result"]
    figs = ", ".join(f"{k} = {r[k]:.4g}" if isinstance(r[k], float) else f"{k} = {r[k]}" for k in KEYS if k in r)
    secs = p.get("milliseconds", 0) / 1000
    lines.append(f"| {p['part']} | {p['status']} | {secs:.1f} | {figs or p.get('reason', '')} |")
lines += ["", "| derived | value |", "|---|---|"]
lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in derived.items()]
tmp = os.path.join(out, "gpu_check.md.tmp")
open(tmp, "w").write("\n".join(lines) + "\n")
os.replace(tmp, os.path.join(out, "gpu_check.md"))
print("\n".join(lines))
sys.exit(0 if ok else 1)
