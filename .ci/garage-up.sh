#!/usr/bin/env bash
# Starts a single-node Garage S3 server on 127.0.0.1 in directory $1 and prints `export`
# lines (SPEECHVAULT_TEST_S3_*) for the test harness. Garage must be on PATH.
# Stop it with: kill "$(cat "$1/garage.pid")"
set -euo pipefail
dir=$1
mkdir -p "$dir/meta" "$dir/data"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
s3_port=$(free_port); rpc_port=$(free_port); admin_port=$(free_port)
cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
TOML
g() { garage -c "$dir/garage.toml" "$@"; }
garage -c "$dir/garage.toml" server > "$dir/garage.log" 2>&1 &
echo $! > "$dir/garage.pid"
for _ in $(seq 1 100); do
  if g status > /dev/null 2>&1; then break; fi
  sleep 0.2
done
node=$(g status 2>/dev/null | awk '$1 ~ /^[0-9a-f]+$/ && length($1) >= 16 {print $1; exit}')
[ -n "$node" ] || { echo "garage did not start; log:" >&2; cat "$dir/garage.log" >&2; exit 1; }
g layout assign -z dc1 -c 10G "$node" > /dev/null
g layout apply --version 1 > /dev/null
key_out=$(g key create speechvault-test)
key_id=$(echo "$key_out" | awk '/Key ID:/ {print $3}')
secret=$(echo "$key_out" | awk '/Secret key:/ {print $3}')
g key allow --create-bucket speechvault-test > /dev/null
[ -n "$key_id" ] && [ -n "$secret" ] || { echo "cannot parse garage key output: $key_out" >&2; exit 1; }
echo "export SPEECHVAULT_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port"
echo "export SPEECHVAULT_TEST_S3_REGION=garage"
echo "export SPEECHVAULT_TEST_S3_ACCESS_KEY=$key_id"
echo "export SPEECHVAULT_TEST_S3_SECRET_KEY=$secret"
