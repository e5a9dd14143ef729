#!/usr/bin/env bash
# Regenerates the TypeScript declarations of the WIT contract (plugin-sdk/js/wasmgate/wit/)
# with jco, pinned here. Run after changing wit/plugin.wit; the result is committed, so authors
# need no jco. The first run installs jco with npm under $WASMGATE_TOOLS.
set -euo pipefail
jco=1.35.0
sdk=$(cd "$(dirname "$0")" && pwd)
wit=$(cd "$sdk/../../wit" && pwd)/plugin.wit
tools=${WASMGATE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmgate/tools}
prefix=$tools/jco-$jco
if [ ! -d "$prefix/node_modules/@bytecodealliance/jco-transpile" ]; then
    mkdir -p "$prefix"
    npm install -s --no-audit --no-fund --prefix "$prefix" "@bytecodealliance/jco@$jco"
fi
out=$sdk/wasmgate/wit
rm -rf "$out"
# jco's `guest-types` command runs with no preopened directories and cannot read the WIT; its
# library, with the filesystem shim opened at `/`, can.
cat > "$prefix/guest-types.mjs" <<'JS'
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const transpile = require.resolve('@bytecodealliance/jco-transpile');
const shim = transpile.replace(/dist\/index\.js$/, 'node_modules/@bytecodealliance/preview2-shim/dist/nodejs/filesystem.js');
const { _setPreopens } = await import(shim);
_setPreopens({ '/': '/' });
const { generateGuestTypes, writeFiles } = await import(transpile);
await writeFiles(await generateGuestTypes(process.argv[2], { worldName: 'plugin', outDir: process.argv[3] }));
JS
node "$prefix/guest-types.mjs" "$wit" "$out/"
