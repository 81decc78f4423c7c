#!/usr/bin/env bash
# The test command: installs what is missing, checks style and lints, then runs the whole suite
# twice: against the sandbox's own S3 server, and against a real Garage server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --garage
export PATH="/opt/garage/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== tests against the sandbox S3 server"
cargo test --workspace

echo "== integration tests against Garage $(garage --version | awk '{print $2}')"
gdir=$(mktemp -d /tmp/speechvault-garage-XXXXXX)
trap 'kill "$(cat "$gdir/garage.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$gdir"' EXIT
eval "$(.ci/garage-up.sh "$gdir")"
cargo test --workspace --tests --test '*'
