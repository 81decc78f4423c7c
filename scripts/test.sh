#!/usr/bin/env bash
# The test command: installs what is missing, checks style and lints, then runs the suite:
#   1. everything against the sandbox's own S3 server (including the fault and crash tests);
#   2. the drill with the sandbox server behaving like MinIO (listings with `+`, types by
#      extension), like AWS (binary/octet-stream), and like Ceph RGW (with the fault and crash
#      tests: `%2F` in listed keys, no ETag from CompleteMultipartUpload);
#   3. the integration tests against a real Garage server;
#   4. the drill against moto's S3 server;
#   5. drill, live, ownership, repositories, selective and fidelity against Ceph RGW.
# Before them: the deployment files under deploy/ (scripts/check-deploy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --garage
export PATH="/opt/garage/bin:$PATH" RUST_BACKTRACE=0
start=$SECONDS

echo "== layers (no import cycle, no layer importing from below)"
python3 scripts/check-layers.py
echo "== vendored rustic_core is the crates.io release plus vendor/patches"
scripts/check-vendor.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo clippy of the production build (no sandbox)"
cargo clippy -p speechvault-cli --no-default-features --quiet -- -D warnings

echo "== deployment files (kustomize, schemas, alert rules); unpacks kubectl, promtool, Pushgateway"
scripts/check-deploy.sh

echo "== tests against the sandbox S3 server"
cargo test --workspace

for like in minio aws; do
  echo "== drill with the sandbox S3 server behaving like $like"
  SPEECHVAULT_TEST_S3_BEHAVE=$like cargo test -p speechvault-cli --test it -- drill:: live:: ownership::
done
echo "== drill, faults and crashes with the sandbox S3 server behaving like Ceph RGW"
SPEECHVAULT_TEST_S3_BEHAVE=rgw cargo test -p speechvault-cli --test it -- drill:: faults:: crash::

tmp=$(mktemp -d /tmp/speechvault-servers-XXXXXX)
cleanup() {
  kill "$(cat "$tmp/garage/garage.pid" 2>/dev/null)" 2>/dev/null || true
  kill "$(cat "$tmp/moto/moto.pid" 2>/dev/null)" 2>/dev/null || true
  .ci/rgw-down.sh "$tmp/rgw" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== integration tests against Garage $(garage --version | awk '{print $2}' | sed 's/^cargo://')"
(
  eval "$(.ci/garage-up.sh "$tmp/garage")"
  cargo test -p speechvault-cli --test it
)

echo "== drill against moto's S3 server"
(
  eval "$(.ci/moto-up.sh "$tmp/moto")"
  cargo test -p speechvault-cli --test it -- drill:: ownership::
)
echo "== drill, live, ownership, repositories, selective, fidelity, immutable repositories, ransomware, damage and salvage against Ceph RGW $(radosgw --version | awk '{print $3}')"
(
  eval "$(.ci/rgw-up.sh "$tmp/rgw")"
  cargo test -p speechvault-cli --test it -- drill:: live:: ownership:: repositories:: selective:: fidelity:: immutable:: ransomware:: damage:: salvage::
)
echo "== all tests passed in $((SECONDS - start)) s"
