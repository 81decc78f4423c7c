#!/usr/bin/env bash
# Selective restore against a full restore, measured in one run on the medium sandbox: back up,
# restore everything into an empty installation, delete one customization (rows and objects),
# restore just that customization, verify the whole installation. Prints both times and the
# ratio (issue: at most 5%). Needs python3 with boto3 (moto's dependency) and bc.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$ROOT" && cargo build --release --quiet -p speechvault-cli)
WORK="${WORK:-/tmp/speechvault-selective-bench}"
mkdir -p "$WORK"
cd "$WORK"
B="$ROOT/target/release/speechvault"
$B sandbox down ma >/dev/null 2>&1 || true
$B sandbox down mb >/dev/null 2>&1 || true
rm -rf repo; printf '[repository]\npath="%s/repo"\npassword="pw-med-123"\n' "$WORK" > sv.toml; chmod 600 sv.toml
$B sandbox up --name ma --scale medium >/dev/null
$B sandbox up --name mb --empty >/dev/null
$B -c sv.toml init >/dev/null
t0=$(date +%s.%N); $B -c sv.toml backup --from sandbox:ma --json > backup.json; t1=$(date +%s.%N)
echo "backup $(echo "$t1 - $t0" | bc)"
t0=$(date +%s.%N); $B -c sv.toml restore --to sandbox:mb --json > full.json; t1=$(date +%s.%N)
FULL=$(echo "$t1 - $t0" | bc); echo "full restore $FULL"
eval "$($B sandbox env ma)"
C=$(psql -d stt-customization -Atc "select customization_id from customizations order by created limit 1")
psql -d stt-customization -Atc "delete from customizations where customization_id='$C'" >/dev/null
python3 - "$C" <<'PY'
import boto3, os, sys
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ.get("AWS_REGION","us-east-1"))
p = f"customizations/{sys.argv[1]}/"
n = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="stt-customization-icp", Prefix=p):
    for o in page.get("Contents", []):
        s3.delete_object(Bucket="stt-customization-icp", Key=o["Key"]); n += 1
print("deleted objects", n)
PY
t0=$(date +%s.%N); $B -c sv.toml restore --to sandbox:ma --customization "$C" --json > sel.json; t1=$(date +%s.%N)
SEL=$(echo "$t1 - $t0" | bc); echo "selective restore $SEL"
echo "ratio $(echo "scale=4; $SEL / $FULL" | bc)"
python3 -c "
import json; r=json.load(open('sel.json'))
print('rows', sum(len(t['insert']) for d in r['databases'] for t in d['tables']), 'objects', sum(len(b['write']) for b in r['buckets']), 'verified', r['verified'])"
$B -c sv.toml verify --against sandbox:ma --json > verify.json || true
python3 -c "import json; r=json.load(open('verify.json')); print('verify ok', r.get('ok'))"
if [ -z "${KEEP:-}" ]; then
  $B sandbox down ma >/dev/null
  $B sandbox down mb >/dev/null
fi
