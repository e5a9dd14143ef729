#!/usr/bin/env bash
# Makes sure the Python and JavaScript example plugins can be built: Debian's python3-venv
# (componentize-py goes into a virtualenv) and npm (componentize-qjs comes from it) when either
# is missing, then the pinned tools themselves, which the SDKs' build scripts install on first
# use under $WASMGATE_TOOLS (default ~/.cache/wasmgate/tools).
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Building the smallest example installs each tool once, so the tests do not race to.
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
plugin-sdk/python/build.sh examples/plugins/add-header/python "$out/py.wasm"
plugin-sdk/js/build.sh examples/plugins/add-header/js "$out/js.wasm"
