#!/usr/bin/env bash
# Benchmark: speechvault against the manual procedure's tools, back to back on the same
# installation and machine, so that ratios from one run can be compared (these machines are
# shared and noisy; absolute seconds move between runs, ratios much less).
#
#   manual backup  = rclone copy of every bucket to disk (stand-in for `mc cp -r`) + pg_dump of
#                    every database + restic backup of that directory
#   manual restore = rclone copy back into empty buckets + psql -f of every dump
#   speechvault    = backup (first), backup (unchanged), restore + full SHA-256 verification
#
# Usage: scripts/bench.sh [tiny|small|medium]   (default medium: 2.4 GB in 27,523 objects)
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-medium}
scripts/setup.sh
for tool in rclone restic; do
  command -v $tool >/dev/null 2>&1 || { echo "== installing $tool (apt)"; apt-get install -y -qq $tool >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $tool >/dev/null; }; }
done
cargo build --release --quiet
sv=$PWD/target/release/speechvault
work=$(mktemp -d /var/tmp/speechvault-bench-XXXXXX)
chmod 711 "$work"
export SPEECHVAULT_SANDBOX_HOME=$work/sandboxes
trap '"$sv" sandbox down a >/dev/null 2>&1 || true; "$sv" sandbox down b >/dev/null 2>&1 || true; "$sv" sandbox down c >/dev/null 2>&1 || true; "$sv" sandbox down d >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

echo "== installations: a ($scale), b, c and d empty"
"$sv" sandbox up --name a --scale "$scale" --seed 1 | grep -E "bucket|database"
"$sv" sandbox up --name b --empty >/dev/null
"$sv" sandbox up --name c --empty >/dev/null
"$sv" sandbox up --name d --empty >/dev/null

results=$work/results
: > "$results"
# measure NAME COMMAND...: wall seconds and peak RSS of the command (and its children).
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/last.log" 2>&1 || { echo "$name failed:"; cat "$work/last.log"; exit 1; }
  read -r secs rss < "$work/time"
  printf '%-44s %8.1f s %8d MB\n' "$name" "$secs" $((rss / 1024)) | tee -a "$results"
}

buckets="speech-service-base-models stt-customization-icp stt-async-icp"
databases="stt-customization tts-customization stt-async"
rclone_env() {  # rclone remote "s3" for sandbox $1, through environment variables
  local s=$1
  eval "$("$sv" sandbox env "$s")"
  export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other RCLONE_CONFIG_S3_ENDPOINT=$AWS_ENDPOINT_URL \
         RCLONE_CONFIG_S3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
  unset AWS_CA_BUNDLE
  export RCLONE_CONFIG=$work/rclone.conf; touch "$RCLONE_CONFIG"
}

echo; echo "== the manual procedure"
manual_backup() {
  rclone_env a
  for b in $buckets; do rclone copy "s3:$b" "$work/copy/$b"; done
  for d in $databases; do pg_dump -d "$d" -f "$work/copy/$d.sql"; done
}
measure "manual backup: rclone copy + pg_dump" bash -c "$(declare -f manual_backup rclone_env); sv=$sv work=$work buckets='$buckets' databases='$databases' manual_backup"
export RESTIC_REPOSITORY=$work/restic RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$work/restic-cache
restic init >/dev/null
measure "manual backup: restic backup of the copy" restic backup --quiet "$work/copy"
measure "manual backup: restic backup, unchanged" restic backup --quiet "$work/copy"
lost=$(( $(for b in $buckets; do (rclone_env a; rclone size "s3:$b" --json); done | python3 -c 'import sys,json; print(sum(json.loads(l)["count"] for l in sys.stdin))') - $(find "$work/copy" -type f -not -name '*.sql' | wc -l) ))
echo "   objects the filesystem copy did not hold: $lost"
manual_restore() {
  rclone_env b
  for b in $buckets; do rclone copy "$work/copy/$b" "s3:$b"; done
  for d in $databases; do psql -q -d postgres -c "CREATE DATABASE \"$d\""; psql -q -v ON_ERROR_STOP=1 -d "$d" -f "$work/copy/$d.sql" >/dev/null; done
}
measure "manual restore: rclone copy + psql -f" bash -c "$(declare -f manual_restore rclone_env); sv=$sv work=$work buckets='$buckets' databases='$databases' manual_restore"

echo; echo "== speechvault"
printf '[repository]\npath = "%s/repo"\npassword = "bench"\n' "$work" > "$work/sv.toml"
"$sv" -c "$work/sv.toml" init >/dev/null
measure "speechvault backup (first)" "$sv" -c "$work/sv.toml" backup --from sandbox:a
measure "speechvault backup (unchanged)" "$sv" -c "$work/sv.toml" backup --from sandbox:a
measure "speechvault restore + SHA-256 verify" "$sv" -c "$work/sv.toml" restore --to sandbox:c
measure "speechvault restore, no verify" "$sv" -c "$work/sv.toml" restore --to sandbox:d --no-verify

echo; echo "== summary ($scale; ratios are manual / speechvault, higher is better for speechvault)"
python3 - "$results" <<'PY'
import sys
t = {}
for line in open(sys.argv[1]):
    name, rest = line[:44].strip(), line[44:].split()
    t[name] = float(rest[0])
mb = t["manual backup: rclone copy + pg_dump"] + t["manual backup: restic backup of the copy"]
print(f"backup, first:      manual {mb:7.1f} s   speechvault {t['speechvault backup (first)']:7.1f} s   ratio {mb / t['speechvault backup (first)']:5.2f}")
mu = t["manual backup: rclone copy + pg_dump"] + t["manual backup: restic backup, unchanged"]
print(f"backup, unchanged:  manual {mu:7.1f} s   speechvault {t['speechvault backup (unchanged)']:7.1f} s   ratio {mu / t['speechvault backup (unchanged)']:5.2f}")
mr = t["manual restore: rclone copy + psql -f"]
print(f"restore:            manual {mr:7.1f} s   speechvault {t['speechvault restore, no verify']:7.1f} s   ratio {mr / t['speechvault restore, no verify']:5.2f}  (with verification: {t['speechvault restore + SHA-256 verify']:.1f} s)")
PY
