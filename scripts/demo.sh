#!/usr/bin/env bash
# The demo: starts a local Speech installation and shows what it holds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
sv=target/release/speechvault
export SPEECHVAULT_SANDBOX_HOME=$(mktemp -d /tmp/speechvault-demo-XXXXXX)
chmod 711 "$SPEECHVAULT_SANDBOX_HOME"
trap '$sv sandbox down a >/dev/null 2>&1 || true; rm -rf "$SPEECHVAULT_SANDBOX_HOME"' EXIT
$sv sandbox up --name a --scale small
$sv sandbox list
