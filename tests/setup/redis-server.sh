#!/usr/bin/env bash
# Installs Debian's redis-server when it is missing (the shared store's tests and the replicas
# example run a real one).
set -euo pipefail
if ! command -v redis-server >/dev/null; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq redis-server >/dev/null
fi
