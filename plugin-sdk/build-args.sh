# Sourced by the SDKs' build scripts: checks `DIR OUT.wasm` (DIR must hold ENTRY, the file
# named by the caller's $entry) and sets dir, out, sdk (the calling script's folder), wit (the
# contract) and tools (where pinned tools go: $WASMGATE_TOOLS, default ~/.cache/wasmgate/tools).
[ $# -eq 2 ] || { echo "usage: $0 DIR OUT.wasm" >&2; exit 2; }
dir=$1 out=$2
[ -f "$dir/$entry" ] || { echo "$dir/$entry: no such file (the plugin's module must be $entry)" >&2; exit 2; }
sdk=$(cd "$(dirname "$0")" && pwd)
wit=$(cd "$sdk/../../wit" && pwd)/plugin.wit
tools=${WASMGATE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmgate/tools}
