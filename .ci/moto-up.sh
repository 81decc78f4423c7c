#!/usr/bin/env bash
# Starts moto's S3 server on 127.0.0.1 in directory $1 and prints `export` lines for the test
# harness. moto accepts any credentials (SPEECHVAULT_TEST_S3_NO_AUTH tells the tests so).
# Stop it with: kill "$(cat "$1/moto.pid")"
set -euo pipefail
dir=$1
mkdir -p "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" > "$dir/moto.log" 2>&1 &
echo $! > "$dir/moto.pid"
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null; then break; fi
  sleep 0.2
done
echo "export SPEECHVAULT_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
echo "export SPEECHVAULT_TEST_S3_REGION=us-east-1"
# moto checks no signature, but the keys must still be unguessable: the secret-leak test looks
# for the secret in every process's arguments, and a common word like "testing" is found there.
echo "export SPEECHVAULT_TEST_S3_ACCESS_KEY=SV$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "export SPEECHVAULT_TEST_S3_SECRET_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "export SPEECHVAULT_TEST_S3_NO_AUTH=1"
