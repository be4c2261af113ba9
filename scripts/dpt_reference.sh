#!/usr/bin/env bash
# The official DPT code for `make bench-compare-dpt`, outside icrl: a clone of
# https://github.com/jon--lee/decision-pretrained-transformer at the commit the comparison
# was measured with, and transformers 4.5.1 (the version its requirements.txt pins) with the
# pure-Python packages its import needs, installed into a folder of their own (not the
# project's Python environment). Only GPT2Model is used, so the tokenizers package (which
# has no wheel for current Pythons) is not installed.
#
#   scripts/dpt_reference.sh PYTHON DEPS_DIR     # prints nothing when both are in place
#
# DPT_REPO=PATH uses an existing clone (e.g. where github.com is not reachable).
set -euo pipefail
python=${1:?python}
deps=${2:?deps dir}
repo=${DPT_REPO:-$deps/dpt}
commit=15172df758a04bb112fa949dd62dcb9765780ec0
if [ ! -f "$repo/net.py" ]; then
    git clone --quiet https://github.com/jon--lee/decision-pretrained-transformer "$repo"
fi
if [ "$(git -C "$repo" rev-parse HEAD)" != "$commit" ]; then
    git -C "$repo" checkout --quiet "$commit"
fi
if ! PYTHONPATH="$deps/python" "$python" -c "import transformers, sys; sys.exit(transformers.__version__ != '4.5.1')" 2>/dev/null; then
    "$python" -m pip install --quiet --target "$deps/python" --no-deps \
        transformers==4.5.1 filelock regex sacremoses requests urllib3 idna \
        charset_normalizer certifi packaging tqdm importlib_metadata zipp click joblib six
fi
