#!/usr/bin/env bash
# Makes sure PyPI torch==$TORCH_VERSION is installed in a virtual environment kept in a per-user
# cache folder keyed by the version (several checkouts and CI share one install), links it as
# ./.libtorch and prints the torch folder. A second call does no network work.
#
# The environment is built in place (never renamed: a venv's scripts hard-code its path in their
# `#!` line) under an exclusive lock, and marked complete by a stamp file written last. A folder
# without the stamp (an interrupted install) or whose scripts point elsewhere (made by an older
# version of this script, which renamed a temporary folder) is rebuilt.
set -euo pipefail
TORCH_VERSION=2.11.0
cache="${ICRL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/icrl}"
venv="$cache/torch-$TORCH_VERSION"
stamp="$venv/.icrl-complete"
root="$(cd "$(dirname "$0")/.." && pwd)"

# True when the environment is complete and its console scripts run from where they are.
healthy() {
    [ -f "$stamp" ] || return 1
    [ -x "$venv/bin/tensorboard" ] || return 1
    [ "$(head -n1 "$venv/bin/tensorboard")" = "#!$venv/bin/python" ] \
        || [ "$(head -n1 "$venv/bin/tensorboard")" = "#!$venv/bin/python3" ]
}

if ! healthy; then
    mkdir -p "$cache"
    exec 9>"$cache/torch-$TORCH_VERSION.lock"
    flock 9
    # Another process may have finished the install while this one waited for the lock.
    if ! healthy; then
        echo "installing PyPI torch==$TORCH_VERSION into $venv (once; a few GB)" >&2
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
            "torch==$TORCH_VERSION" safetensors numpy tensorboard >&2
        dir=$("$venv/bin/python" -c 'import torch, pathlib; print(pathlib.Path(torch.__file__).parent)')
        echo "$dir" >"$venv/torch-dir"
        touch "$stamp"
    fi
    flock -u 9
fi
dir=$(cat "$venv/torch-dir")
if [ "$(readlink "$root/.libtorch" 2>/dev/null)" != "$dir" ]; then
    ln -sfn "$dir" "$root/.libtorch"
fi
echo "$dir"
