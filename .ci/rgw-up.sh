#!/usr/bin/env bash
# Starts a throwaway single-node Ceph cluster (1 monitor, 1 memstore OSD, no manager, no auth)
# with a RADOS Gateway on 127.0.0.1 in directory $1, and prints `export` lines
# (SPEECHVAULT_TEST_S3_*) for the test harness. Needs Debian's radosgw, ceph-mon, ceph-osd and
# ceph-common (scripts/setup.sh --rgw installs them). Starts in a few seconds.
#
# Stop it with: .ci/rgw-down.sh "$1" (ends exactly the daemons it started: their pids are in
# $1/*.pid and their command lines name $1/ceph.conf).
set -euo pipefail
dir=$(realpath -m "$1")
mkdir -p "$dir"/mon "$dir"/osd "$dir"/run "$dir"/log "$dir"/rgw
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mon_port=$(free_port)
rgw_port=$(free_port)
fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
conf=$dir/ceph.conf
# What made it work here (../shared/FIELD-NOTES.md): no auth in [global] and in [client]
# together with ms_mon_client_mode = crc (radosgw defaults to cephx and secure mode), a short
# paxos_propose_interval (else every pool radosgw creates waits 1 s), one replica, memstore.
cat > "$conf" <<CONF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$mon_port
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
ms_cluster_mode = crc
ms_service_mode = crc
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_data_avail_warn = 1
mon_data_avail_crit = 0
osd_objectstore = memstore
memstore_device_bytes = 2147483648
run_dir = $dir/run
admin_socket = $dir/run/\$cluster-\$name.asok
log_file = $dir/log/\$cluster-\$name.log
pid_file = $dir/run/\$name.pidfile

[mon]
mon_data = $dir/mon
paxos_propose_interval = 0.05

[osd]
osd_data = $dir/osd

[client]
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
rgw_frontends = beast endpoint=127.0.0.1:$rgw_port
rgw_data = $dir/rgw
rgw_dns_name = localhost
CONF

monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" > /dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" > "$dir/log/mkfs-mon.log" 2>&1
ceph-mon -c "$conf" -i a -f > "$dir/log/mon.out" 2>&1 &
echo $! > "$dir/mon.pid"
for _ in $(seq 1 100); do
  if timeout 5 ceph -c "$conf" status > /dev/null 2>&1; then break; fi
  sleep 0.1
done
osd=$(ceph -c "$conf" osd create)
ceph-osd -c "$conf" -i "$osd" --mkfs > "$dir/log/mkfs-osd.log" 2>&1
ceph-osd -c "$conf" -i "$osd" -f > "$dir/log/osd.out" 2>&1 &
echo $! > "$dir/osd.pid"
radosgw -c "$conf" -n client.rgw -f > "$dir/log/rgw.out" 2>&1 &
echo $! > "$dir/rgw.pid"
for _ in $(seq 1 300); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$rgw_port/')" 2>/dev/null; then break; fi
  sleep 0.1
done
python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$rgw_port/')" 2>/dev/null || {
  echo "radosgw did not start; its log:" >&2
  tail -n 40 "$dir/log/rgw.out" "$dir"/log/ceph-client.rgw.log >&2 || true
  exit 1
}
user=$(radosgw-admin -c "$conf" -n client.rgw user create --uid speechvault-test --display-name speechvault-test 2>/dev/null)
key_id=$(echo "$user" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["access_key"])')
secret=$(echo "$user" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["secret_key"])')
echo "export SPEECHVAULT_TEST_S3_ENDPOINT=http://127.0.0.1:$rgw_port"
echo "export SPEECHVAULT_TEST_S3_REGION=us-east-1"
echo "export SPEECHVAULT_TEST_S3_ACCESS_KEY=$key_id"
echo "export SPEECHVAULT_TEST_S3_SECRET_KEY=$secret"
# A second user, for the write-only backup key of the immutable-repository tests (a bucket
# policy of the first user's bucket grants it read, list, put and retention only).
writer=$(radosgw-admin -c "$conf" -n client.rgw user create --uid speechvault-writer --display-name speechvault-writer 2>/dev/null)
echo "export SPEECHVAULT_TEST_S3_WRITER_USER=speechvault-writer"
echo "export SPEECHVAULT_TEST_S3_WRITER_ACCESS_KEY=$(echo "$writer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["access_key"])')"
echo "export SPEECHVAULT_TEST_S3_WRITER_SECRET_KEY=$(echo "$writer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["keys"][0]["secret_key"])')"
# RGW enforces S3 Object Lock: the immutable-repository tests run their attack here.
echo "export SPEECHVAULT_TEST_S3_OBJECT_LOCK=1"
