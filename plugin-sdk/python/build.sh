#!/usr/bin/env bash
# Builds a Python plugin into a component:
#
#     plugin-sdk/python/build.sh DIR OUT.wasm
#
# DIR holds `app.py`, whose top level sets `Handler = wasmgate.export(MyPlugin)`, and any
# pure-Python modules it imports. The first run installs the pinned componentize-py into a
# virtualenv under $WASMGATE_TOOLS (default ~/.cache/wasmgate/tools); later runs reuse it.
set -euo pipefail
componentize_py=0.25.1
entry=app.py
# shellcheck source=../build-args.sh
source "$(dirname "$0")/../build-args.sh"
venv=$tools/componentize-py-$componentize_py
if [ ! -x "$venv/bin/componentize-py" ]; then
    echo "installing componentize-py $componentize_py into $venv" >&2
    python3 -m venv "$venv" || { echo "cannot make a virtualenv: install python3-venv (Debian), or run tests/setup/plugin-tools.sh" >&2; exit 1; }
    "$venv/bin/pip" install -q "componentize-py==$componentize_py"
fi
# World `plugin`: only the gateway's interfaces and the WASI the interpreter needs; no wasi:http.
"$venv/bin/componentize-py" -q -d "$wit" -w plugin componentize -p "$dir" -p "$sdk" app -o "$out"
