#!/usr/bin/env bash
# Builds a JavaScript plugin into a component:
#
#     plugin-sdk/js/build.sh DIR OUT.wasm
#
# DIR holds `plugin.js`, an ES module that exports `handler = exportPlugin(MyPlugin)` and
# imports the SDK as 'wasmgate', and any modules it imports by relative path. It is built on
# QuickJS (componentize-qjs, pinned here), without the component model's async ABI. The first
# run installs componentize-qjs with npm under $WASMGATE_TOOLS (default ~/.cache/wasmgate/tools).
set -euo pipefail
componentize_qjs=0.4.5
entry=plugin.js
# shellcheck source=../build-args.sh
source "$(dirname "$0")/../build-args.sh"
prefix=$tools/componentize-qjs-$componentize_qjs
if [ ! -x "$prefix/node_modules/.bin/componentize-qjs" ]; then
    echo "installing componentize-qjs $componentize_qjs into $prefix" >&2
    mkdir -p "$prefix"
    npm install -s --no-audit --no-fund --prefix "$prefix" "componentize-qjs@$componentize_qjs"
fi
# The plugin's directory, with the SDK where its `import 'wasmgate'` resolves.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -R "$dir"/. "$stage"/
mkdir -p "$stage/node_modules"
rm -rf "$stage/node_modules/wasmgate"
cp -R "$sdk/wasmgate" "$stage/node_modules/wasmgate"
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
(cd "$stage" && "$prefix/node_modules/.bin/componentize-qjs" --wit "$wit" --world plugin \
    --js plugin.js --module-root . --sync -o "$out_abs" >/dev/null)
