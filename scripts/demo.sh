#!/usr/bin/env bash
# The disaster-recovery drill on two local sandboxes:
#   1. start installation "a" (seeded) and an empty installation "b";
#   2. back up a into an encrypted restic-format repository;
#   3. restore into b as a different service instance, moving ownership;
#   4. verify b against the backup and print the report.
# Usage: scripts/demo.sh [--scale tiny|small|medium] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
scale=small keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --scale) scale=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: scripts/demo.sh [--scale tiny|small|medium] [--keep]" >&2; exit 2 ;;
  esac
done
scripts/setup.sh
echo "== building speechvault (release)"
cargo build --release --quiet
sv=$PWD/target/release/speechvault
work=$(mktemp -d /var/tmp/speechvault-demo-XXXXXX)
chmod 711 "$work"
export SPEECHVAULT_SANDBOX_HOME=$work/sandboxes
cleanup() {
  if [ $keep = 1 ]; then
    echo "kept: $work (SPEECHVAULT_SANDBOX_HOME=$SPEECHVAULT_SANDBOX_HOME; remove with: $sv sandbox down a; $sv sandbox down b)"
    return
  fi
  "$sv" sandbox down a >/dev/null 2>&1 || true
  "$sv" sandbox down b >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo; echo "== 1. two Speech installations on 127.0.0.1: a (production, $scale) and b (fresh, empty)"
"$sv" sandbox up --name a --scale "$scale" --seed 7
"$sv" sandbox up --name b --empty > /dev/null
echo "sandbox b is up (empty)"

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/repo-password"
cat > "$work/speechvault.toml" <<TOML
[repository]
path = "$work/repository"
password_file = "$work/repo-password"
TOML
cfg=(-c "$work/speechvault.toml")

echo; echo "== 2. back up a"
"$sv" "${cfg[@]}" init
"$sv" "${cfg[@]}" backup --from sandbox:a
"$sv" "${cfg[@]}" snapshots

# The numeric Cloud Pak for Data instance id that owns part of a's rows (see the seed report),
# and the new installation's instance id.
source_instance=1612345678900007
target_instance=$(python3 -c 'import uuid; print(uuid.uuid4())')
echo; echo "== 3. restore into b, moving ownership from instance $source_instance to $target_instance"
"$sv" "${cfg[@]}" restore latest --to sandbox:b --from-instance "$source_instance" --to-instance "$target_instance"

echo; echo "== 4. b, as a client sees it"
(
  eval "$("$sv" sandbox env b)"
  psql -At -d stt-customization -c "SELECT 'customizations of the new instance: ' || count(*) FROM customizations WHERE owner = '$target_instance'"
  psql -At -d stt-async -c "SELECT 'jobs of the new instance: ' || count(*) FROM jobs WHERE username = '$target_instance'"
)
echo; echo "drill complete: backup, restore, ownership and verification all succeeded"
