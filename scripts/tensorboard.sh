#!/usr/bin/env bash
# Starts TensorBoard from the project's cached Python environment (the one scripts/libtorch.sh
# installs, which carries tensorboard) on a run folder, a sweep folder or `runs/`.
#
#   scripts/tensorboard.sh [LOGDIR] [PORT]       (also: make tensorboard [LOGDIR=...] [PORT=...])
#
# It listens on 127.0.0.1 only; forward the port (ssh -L PORT:127.0.0.1:PORT host) to watch a
# remote machine. The URL is printed before TensorBoard starts; Ctrl-C stops it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
logdir="${1:-runs}"
port="${2:-${PORT:-6006}}"
if [ ! -d "$logdir" ]; then
    echo "error: log folder '$logdir' does not exist (train a run first: make run)" >&2
    exit 2
fi
case "$port" in
    ''|*[!0-9]*) echo "error: port '$port' is not a number" >&2; exit 2 ;;
esac
"$root/scripts/libtorch.sh" >/dev/null
cache="${ICRL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/icrl}"
tensorboard="$cache/torch-2.11.0/bin/tensorboard"
echo "TensorBoard on $(cd "$logdir" && pwd): http://127.0.0.1:$port/"
# --reload_interval 5: new runs of a sweep show up within seconds, not TensorBoard's default 30.
exec "$tensorboard" --logdir "$logdir" --host 127.0.0.1 --port "$port" --reload_interval 5
