#!/usr/bin/env bash
# End-to-end env steps/s of two icrl binaries (e.g. an old commit's and this one's), each on
# its own config file, in interleaved rounds: `icrl train` for a fixed number of env steps with
# evaluation reduced to one episode, rate from TensorBoard (tb_rate.py). Prints every round and
# the median ratio B / A.
#
#   bench/reference/compare_commits.sh OLD_BIN OLD_CONFIG NEW_BIN NEW_CONFIG [ROUNDS] [STEPS]
#
# Build an old commit with `git worktree add /tmp/old <commit>` and `cargo build --release`
# there (same LIBTORCH). Give NEW_CONFIG the fields that keep the algorithm the same as the old
# code's defaults (README, "Throughput" shows the example of f8fd338).
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,12p "$0"; exit 2; }
A_BIN=$1 A_CFG=$2 B_BIN=$3 B_CFG=$4 ROUNDS=${5:-3} STEPS=${6:-196608}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${BENCH_PYTHON:-$HOME/.cache/icrl/torch-2.11.0/bin/python}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export OMP_WAIT_POLICY=PASSIVE
COMMON=(--set "method.total_steps=$STEPS" --set eval.every_steps=0 --set eval.trials_per_task=1
        --set eval.episodes_per_trial=1)
ratios=()
for r in $(seq 1 "$ROUNDS"); do
  line="round $r:"
  declare -A got=()
  for side in A B; do
    bin_var=${side}_BIN cfg_var=${side}_CFG
    run=$("${!bin_var}" train "${!cfg_var}" --out "$OUT/$side" "${COMMON[@]}" 2>&1 | sed -n 's/^done: //p')
    [ -n "$run" ] || { echo "$side: the run did not finish" >&2; exit 1; }
    got[$side]=$("$PY" "$HERE/tb_rate.py" "$run")
    line="$line $side ${got[$side]}"
  done
  ratio=$(python3 -c "print(f'{${got[B]} / ${got[A]}:.2f}')")
  ratios+=("$ratio")
  echo "$line env steps/s, B / A $ratio"
done
python3 -c "import statistics,sys; print('median B / A:', statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"
