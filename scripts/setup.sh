#!/usr/bin/env bash
# Installs what speechvault's demo and tests need on a bare Debian machine (idempotent):
# PostgreSQL server binaries, and with --garage the test servers and tools: restic (reads our
# repositories), moto's S3 server (PyPI), Ceph RGW (Debian) and Garage (built from crates.io).
set -euo pipefail
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$@" >/dev/null; }
}
need_pg=1
if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then need_pg=0; fi
if [ $need_pg = 1 ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then need_pg=0; fi
if [ $need_pg = 1 ]; then
  echo "== installing PostgreSQL server binaries (apt)"
  apt_install postgresql
fi
if [ "${1:-}" = "--garage" ]; then
  if ! command -v patch >/dev/null 2>&1; then
    echo "== installing patch (apt; scripts/check-vendor.sh applies the rustic_core patches)"
    apt_install patch
  fi
  if ! command -v restic >/dev/null 2>&1; then
    # The tests check that restic itself reads speechvault's repositories.
    echo "== installing restic (apt)"
    apt_install restic
  fi
  if ! command -v moto_server >/dev/null 2>&1; then
    # moto's S3 server: a restore target that behaves like AWS (binary/octet-stream, no auth).
    echo "== installing moto's S3 server (PyPI)"
    python3 -m pip install --quiet 'moto[server]'
  fi
  if ! command -v radosgw >/dev/null 2>&1 || ! command -v ceph-mon >/dev/null 2>&1 || ! command -v ceph-osd >/dev/null 2>&1; then
    # Ceph's RADOS Gateway (OpenShift Data Foundation's S3 server): a throwaway cluster per run.
    echo "== installing Ceph RGW (apt: radosgw, ceph-mon, ceph-osd, ceph-common)"
    apt_install --no-install-recommends radosgw ceph-mon ceph-osd ceph-common
  fi
  export PATH="/opt/garage/bin:$PATH"
  if ! command -v garage >/dev/null 2>&1 || ! garage --version 2>/dev/null | grep -q '2\.5\.0'; then
    echo "== building Garage 2.5.0 from crates.io (about 7 minutes on 2 cores)"
    cargo install garage --version 2.5.0 --locked --root /opt/garage --quiet
  fi
fi
