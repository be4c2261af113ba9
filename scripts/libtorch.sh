#!/usr/bin/env bash
# Makes sure PyPI torch==$TORCH_VERSION is installed in a virtual environment kept in a per-user
# cache folder keyed by the version (several checkouts and CI share one install), links it as
# ./.libtorch and prints the torch folder. A second call does no network work.
set -euo pipefail
TORCH_VERSION=2.11.0
cache="${ICRL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/icrl}"
venv="$cache/torch-$TORCH_VERSION"
stamp="$venv/.icrl-installed"
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ ! -f "$stamp" ]; then
    echo "installing PyPI torch==$TORCH_VERSION into $venv (once; a few GB)" >&2
    mkdir -p "$cache"
    # Install into a temporary folder and rename it, so an interrupted install is never used.
    tmp="$venv.partial.$$"
    rm -rf "$tmp"
    python3 -m venv "$tmp"
    "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
        "torch==$TORCH_VERSION" safetensors numpy tensorboard >&2
    rm -rf "$venv"
    mv "$tmp" "$venv"
    dir=$("$venv/bin/python" -c 'import torch, pathlib; print(pathlib.Path(torch.__file__).parent)')
    echo "$dir" >"$venv/torch-dir"
    touch "$stamp"
fi
dir=$(cat "$venv/torch-dir")
if [ "$(readlink "$root/.libtorch" 2>/dev/null)" != "$dir" ]; then
    ln -sfn "$dir" "$root/.libtorch"
fi
echo "$dir"
