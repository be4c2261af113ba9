#!/usr/bin/env bash
# Builds what scripts/gpu_check.sh runs on a GPU machine, where nothing is compiled:
# target/gpu-bundle/icrl (release, `cuda` feature) and target/gpu-bundle/tests/<name> (the
# test executables of agent's precision and cuda tests), stripped of debug info so they travel
# in the device tool's 64 MiB (carry: ["target/gpu-bundle"]).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
$CARGO build --release --features cuda --bin icrl
rm -rf target/gpu-bundle && mkdir -p target/gpu-bundle/tests
cp target/release/icrl target/gpu-bundle/icrl
$CARGO test --release --features cuda -p agent --test precision --test cuda --no-run \
  --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])' \
  | while read -r name exe; do cp "$exe" "target/gpu-bundle/tests/$name"; echo agent >"target/gpu-bundle/tests/$name.dir"; done
strip --strip-debug target/gpu-bundle/icrl target/gpu-bundle/tests/* 2>/dev/null || true
du -sh target/gpu-bundle
