#!/usr/bin/env bash
# The Slurm launcher on a real one-node Slurm cluster (scripts/slurm_cluster.sh), as CI runs it
# (`make test-slurm`, called by .ci/run):
#   1. a 2 variants x 2 seeds sweep is submitted with `icrl sweep --launcher slurm`;
#   2. once one task's run has written a checkpoint, that task gets SIGTERM
#      (`scancel --signal=TERM --batch`, what preemption sends) and is requeued
#      (`scontrol requeue`);
#   3. after every task left the queue: every run finished exactly once, the interrupted run
#      resumed from its checkpoint, and `icrl report` over the folder equals the report of the
#      same sweep run with the local launcher (wall times aside).
# Needs root (it starts the cluster). Prints the wall time of each phase.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
icrl="$root/target/release/icrl"
[ -x "$icrl" ] || { echo "error: build first (make build)" >&2; exit 2; }
started=$(date +%s)
phase() { echo "[test_slurm +$(( $(date +%s) - started ))s] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

"$root/scripts/slurm_cluster.sh" start
work="$(mktemp -d /tmp/icrl-slurm-test.XXXXXX)"
job=""
cleanup() {
    [ -n "$job" ] && scancel "$job" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
chmod 755 "$work"

cat >"$work/exp.ron" <<EOF
Experiment(
    name: "slurm_test",
    base: "$root/configs/darkroom_relic.ron",
    budget: [
        "method.num_envs=2", "method.minibatches=1", "method.epochs=1",
        "method.rollout_len=100", "method.updates_per_rollout=2",
        "method.total_steps=3000", "method.warmup_steps=100",
        "checkpoint.every_updates=2", "eval.episodes_per_trial=4", "eval.trials_per_task=2",
        "eval.max_tasks=Some(4)", "model.heads=2", "runtime.device=\"cpu\"",
        "runtime.torch_threads=1", "sampler.threads=1", "logging.progress=false",
    ],
    variants: [
        (name: "kv", set: []),
        (name: "nosink", set: ["model.sink=None"]),
    ],
    seeds: [0, 1],
)
EOF

phase "a submission Slurm rejects: exit 1, nothing queued, no run state written"
set +e
rejected="$("$icrl" sweep "$work/exp.ron" --out "$work/rejected" --launcher slurm \
    --partition no_such_partition 2>&1)"
code=$?
set -e
[ "$code" = 1 ] || fail "rejected submission exited $code, expected 1: $rejected"
echo "$rejected" | grep -q "sbatch rejected" || fail "no clear message: $rejected"
[ ! -e "$work/rejected/slurm/jobs.json" ] || fail "a rejected submission recorded a job"
! compgen -G "$work/rejected/*/status.json" >/dev/null || fail "a rejected submission wrote run state"
[ -z "$(squeue -h)" ] || fail "a rejected submission queued something"

phase "submitting the sweep to Slurm"
out="$("$icrl" sweep "$work/exp.ron" --out "$work/slurm" --launcher slurm --cpus-per-task 1 2>&1)"
echo "$out"
job=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[-1]["job_id"])' \
    "$work/slurm/slurm/jobs.json")

# Wait until slot 0 (kv, seed 0) has a checkpoint, then preempt it.
victim="kv__s0"
for _ in $(seq 600); do
    if compgen -G "$work/slurm/$victim/*/checkpoints/ckpt_*.safetensors" >/dev/null; then
        break
    fi
    sleep 0.1
done
compgen -G "$work/slurm/$victim/*/checkpoints/ckpt_*.safetensors" >/dev/null \
    || fail "no checkpoint in $victim after 60 s"
squeue -h -j "${job}_0" -o %T | grep -qx RUNNING || fail "task ${job}_0 is not running"
phase "SIGTERM to task ${job}_0 ($victim)"
# scancel's exit status is not reliable here (it may report 1 although the signal was
# delivered); the slot's state below is what counts.
scancel --signal=TERM --batch "${job}_0" || true
for _ in $(seq 600); do
    squeue -h -j "${job}_0" -o %T 2>/dev/null | grep -qx RUNNING || break
    sleep 0.1
done
state=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' \
    "$work/slurm/$victim/status.json")
[ "$state" = interrupted ] || fail "$victim is '$state' after SIGTERM, expected interrupted"
phase "requeueing task ${job}_0"
scontrol requeue "${job}_0"
# A requeued job waits a while before it may start again; let it start now.
scontrol update JobId="${job}_0" StartTime=now >/dev/null 2>&1 || true

for _ in $(seq 3000); do
    [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break
    sleep 0.2
done
[ -z "$(squeue -h -j "$job")" ] || fail "job $job still queued after 10 minutes"
phase "all Slurm tasks finished"
"$icrl" sweep --status "$work/slurm"

python3 - "$work/slurm" "$victim" <<'EOF'
import json, pathlib, sys
sweep, victim = pathlib.Path(sys.argv[1]), sys.argv[2]
manifest = json.load(open(sweep / "manifest.json"))
for run in manifest["runs"]:
    status = json.load(open(sweep / run["slot"] / "status.json"))
    attempts = status["attempts"]
    assert status["state"] == "done", (run["slot"], status)
    finished = [a for a in attempts if a["exit_code"] == 0]
    assert len(finished) == 1, (run["slot"], "finished more than once", attempts)
    if run["slot"] == victim:
        assert len(attempts) == 2, attempts
        assert attempts[0]["exit_code"] in (130, 143), attempts[0]
        assert "--resume" in attempts[1]["args"], attempts[1]
        log = (sweep / victim / "log.txt").read_text()
        assert "resum" in log.lower(), log[-2000:]
    else:
        assert len(attempts) == 1, (run["slot"], attempts)
print("every run finished once; the interrupted run resumed from its checkpoint")
EOF

phase "the same sweep with the local launcher"
"$icrl" sweep "$work/exp.ron" --out "$work/local" >/dev/null 2>&1 || fail "local sweep failed"
"$icrl" report "$work/slurm" --out "$work/report_slurm" >/dev/null
"$icrl" report "$work/local" --out "$work/report_local" >/dev/null
python3 - "$work/report_slurm" "$work/report_local" <<'EOF'
import csv, pathlib, sys
a, b = map(pathlib.Path, sys.argv[1:3])
def rows(path, drop):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]
for name, drop in [("report.csv", {"wall_seconds_mean"}), ("curves.csv", set()),
                   ("runs.csv", {"run_dir", "eval_json", "offline_json", "wall_seconds"})]:
    ra, rb = rows(a / name, drop), rows(b / name, drop)
    assert ra == rb, f"{name} differs:\n{ra}\n{rb}"
returns = [float(r["last_return"]) for r in rows(a / "runs.csv", set())]
print(f"the Slurm and local reports are equal (last-episode returns {returns})")
EOF
phase "passed"
