#!/usr/bin/env bash
# Stops the Ceph cluster .ci/rgw-up.sh started in $1: exactly its own daemons (the pids it
# recorded, and only while their command lines still name $1/ceph.conf), then removes $1.
set -uo pipefail
dir=$(realpath -m "$1")
for name in rgw osd mon; do
  pidfile=$dir/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/ceph.conf"; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
done
rm -rf "$dir"
