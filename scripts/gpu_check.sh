#!/usr/bin/env bash
# scripts/gpu_check.sh OUTDIR [--device cuda:0|cpu] [--tiny] [--bin DIR]
#
# The GPU check of issue 18 in one run: each part with its own time limit, every number in
# OUTDIR/gpu_check.json, a Markdown table in OUTDIR/gpu_check.md, logs in OUTDIR/*.log.
# Parts, in order: info, plan, tests, bench_<context> (+ sdpa_<context>), train_64k (+ its
# eval on the CPU: a checkpoint written on the GPU loads on the CPU), darkroom (and the same
# on the CPU for comparison). Nothing is compiled: binaries come from --bin DIR (default
# target/gpu-bundle, made by `make gpu-bundle`, else target/release); test executables from
# DIR/tests/. `--device cpu --tiny` runs every part at tiny sizes (the test suite does, so a
# broken script is caught without a GPU). Exit code 0 when every part passed or was skipped.
set -u
OUT=${1:?usage: scripts/gpu_check.sh OUTDIR [--device cuda:0|cpu] [--tiny] [--bin DIR]}
shift
DEVICE=cuda:0
TINY=0
BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --bin) BIN=$2; shift 2 ;;
    *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ -z "$BIN" ]; then
  if [ -x target/gpu-bundle/icrl ]; then BIN=target/gpu-bundle; else BIN=target/release; fi
fi
BIN=$(cd "$BIN" && pwd)
ICRL=$BIN/icrl
[ -x "$ICRL" ] || { echo "gpu_check: no icrl binary in $BIN" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PARTS="$OUT/parts.jsonl"
: >"$PARTS"
PYTHON=${PYTHON:-python3}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# Every large tensor from mmap, so that the CPU's resident-set peak is the live-tensor peak.
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-65536}

# The device's torch libraries: the binary's rpath names the build machine's folder, so the
# library path points at this machine's torch (LD_LIBRARY_PATH wins over RUNPATH).
TORCH_LIB=$("$PYTHON" -c 'import torch,os;print(os.path.join(os.path.dirname(torch.__file__),"lib"))' 2>/dev/null)
if [ -n "$TORCH_LIB" ] && [ -d "$TORCH_LIB" ]; then
  export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
HAVE_TORCH_PY=0
[ -n "$TORCH_LIB" ] && HAVE_TORCH_PY=1

if [ "$TINY" = 1 ]; then
  CONTEXTS="64 128"; TRAIN_BATCH_TOKENS=256; DECODE_STEPS=8; LIMIT=120
  PLAN_SETS=(--set method.rollout_len=256 --set method.updates_per_rollout=32)
else
  CONTEXTS="4096 16384 65536"; TRAIN_BATCH_TOKENS=65536; DECODE_STEPS=64; LIMIT=150
  PLAN_SETS=()
fi
PEAK_TFLOPS=${PEAK_TFLOPS:-989}  # H100/H200 SXM dense bf16 (datasheet); measured here ~790
case "$DEVICE" in cpu) PEAK_ARGS=(); DEV_NAME=cpu ;; *) PEAK_ARGS=(--peak-tflops "$PEAK_TFLOPS"); DEV_NAME=cuda ;; esac

# part NAME LIMIT_S CMD...: runs CMD with a time limit, its output in NAME.log, the last line
# that is a JSON object in NAME.json, and one status line in parts.jsonl.
part() {
  local name=$1 limit=$2; shift 2
  local start end rc status
  start=$(date +%s%N)
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  end=$(date +%s%N)
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  grep '^{' "$OUT/$name.log" | tail -1 >"$OUT/$name.json" || true
  [ -s "$OUT/$name.json" ] || echo '{}' >"$OUT/$name.json"
  printf '{"part":"%s","status":"%s","exit_code":%d,"milliseconds":%s,"limit_s":%d}\n' \
    "$name" "$status" "$rc" "$(( (end - start) / 1000000 ))" "$limit" >>"$PARTS"
  echo "gpu_check: $name: $status ($rc)" >&2
}
skip() {
  printf '{"part":"%s","status":"skipped","reason":"%s"}\n' "$1" "$2" >>"$PARTS"
  echo '{}' >"$OUT/$1.json"
  echo "gpu_check: $1: skipped ($2)" >&2
}

# (a) versions, device, memory, attention backend at 4k and 64k.
part info 60 "$ICRL" info --device "$DEVICE" --json

# (3) the memory plan of the 64k config (nothing allocated).
part plan 30 "$ICRL" bench model --plan configs/house_nav_relic_64k.ron "${PLAN_SETS[@]}"

# (b) prebuilt test executables: the CUDA checks on a GPU, the bf16 checks on the CPU.
if ls "$BIN"/tests/* >/dev/null 2>&1; then
  FILTER=cuda; [ "$DEVICE" = cpu ] && FILTER=cpu_
  # Each executable runs from its crate's folder (tests read fixtures relative to it).
  part tests 240 bash -c '
    rc=0
    for exe in "$1"/tests/*; do
      case "$exe" in *.dir) continue ;; esac
      echo "== $exe $2"
      (cd "$3/$(cat "$exe.dir" 2>/dev/null || echo .)" && "$exe" "$2" --test-threads=1 --nocapture) || rc=1
    done
    exit $rc' tests "$BIN" "$FILTER" "$ROOT"
else
  skip tests "no prebuilt test executables in $BIN/tests (make gpu-bundle)"
fi

# (c) ReLIC's small model (4 layers, width 256, 8 heads) at each context; PyTorch's SDPA on
# the same attention shapes.
for n in $CONTEXTS; do
  b=$(( TRAIN_BATCH_TOKENS / n )); [ $b -lt 1 ] && b=1
  part "bench_$n" "$LIMIT" "$ICRL" bench model --layers 4 --d-model 256 --heads 8 \
    --context "$n" --batch "$b" --decode-batch 20 --decode-steps "$DECODE_STEPS" \
    --iters 3 --device "$DEVICE" "${PEAK_ARGS[@]}"
  if [ "$HAVE_TORCH_PY" = 1 ]; then
    part "sdpa_$n" 120 "$PYTHON" bench/reference/sdpa_bench.py --device "$DEV_NAME" \
      --dtype "$([ "$DEVICE" = cpu ] && echo f32 || echo bf16)" --shape "$b,8,$n,32"
  else
    skip "sdpa_$n" "no python3 with torch"
  fi
done

# (d) house_nav_relic_64k for a few partial updates of one 65,536-step trial; then its
# checkpoint evaluated on the CPU.
RUNS="$OUT/runs"
TRAIN_SETS=(--set method.stop_after_updates=4 --set eval.max_tasks=1 --set eval.trials_per_task=1
  --set eval.episodes_per_trial=2 --set logging.progress=false)
[ "$TINY" = 1 ] && TRAIN_SETS+=(--set method.rollout_len=256 --set method.updates_per_rollout=32
  --set method.num_envs=2 --set method.minibatches=2 --set model.layers=1 --set model.d_model=32
  --set model.mlp_hidden=64 --set model.heads=2 --set env.image_height=16 --set env.image_width=16)
part plan_train_64k 30 "$ICRL" bench model --plan configs/house_nav_relic_64k.ron "${TRAIN_SETS[@]}"
part train_64k 300 "$ICRL" train configs/house_nav_relic_64k.ron "${TRAIN_SETS[@]}" \
  --device "$DEVICE" --out "$RUNS/house"
RUN_64K=$(ls -d "$RUNS"/house/*/ 2>/dev/null | head -1)
if [ -n "$RUN_64K" ]; then
  part eval_64k_on_cpu 120 "$ICRL" eval "$RUN_64K" --device cpu --episodes 1 --trials 1
else
  skip eval_64k_on_cpu "train_64k wrote no run folder"
fi

# (e) Dark Room, one rollout of the `make run` config (64 envs x 512 steps, 4 partial updates
# and the full one), on the device and on the CPU: env steps/s side by side.
DARK_SETS=()
[ "$TINY" = 1 ] && DARK_SETS=(--set method.num_envs=4 --set method.rollout_len=64 --set method.minibatches=2)
DARK_STEPS=32768; [ "$TINY" = 1 ] && DARK_STEPS=256
part darkroom 180 "$ICRL" bench train --config configs/darkroom_relic.ron \
  --steps "$DARK_STEPS" --device "$DEVICE" "${DARK_SETS[@]}"
if [ "$DEVICE" != cpu ]; then
  part darkroom_cpu 240 "$ICRL" bench train --config configs/darkroom_relic.ron \
    --steps "$DARK_STEPS" --device cpu "${DARK_SETS[@]}"
else
  skip darkroom_cpu "the device is the CPU"
fi

# Summary: gpu_check.json (every part's status and numbers) and gpu_check.md.
"$PYTHON" scripts/gpu_check_summary.py "$OUT" "$DEVICE" "$TINY" 2>/dev/null \
  || python3 scripts/gpu_check_summary.py "$OUT" "$DEVICE" "$TINY"
