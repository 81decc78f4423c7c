#!/usr/bin/env bash
# Checks that vendor/rustic_core is exactly the crates.io release of rustic_core 0.13.0 with
# vendor/patches/*.patch applied in order, and nothing else: takes the .crate from cargo's
# cache or downloads it from crates.io, checks its sha256, unpacks it in a temporary
# directory, applies the patches with `patch -p1` and compares the result with `diff -r`.
# Exits non-zero, saying what differs, on any difference.
#
# Needs curl (only if the .crate is not in cargo's cache), tar, sha256sum, patch and diff; on
# a bare Debian machine `apt-get install patch` brings the one that may be missing.
# CHECK_VENDOR_KEEP=1 keeps the patched tree and prints where it is (to rework a patch).
set -euo pipefail
cd "$(dirname "$0")/.."

name=rustic_core
version=0.13.0
# The checksum crates.io's index records for rustic_core 0.13.0.
sha256=ddab48a7f892b4943d9bffe7be44746c443982ae06ffcc3b2be55b31999b1725
vendored=vendor/$name
patches=vendor/patches

fail() {
  echo "check-vendor: FAILED: $*" >&2
  exit 1
}

for tool in tar sha256sum patch diff; do
  command -v "$tool" > /dev/null || fail "$tool is missing (on Debian: apt-get install $tool)"
done
[ -d "$vendored" ] || fail "$vendored does not exist"

work=$(mktemp -d "${TMPDIR:-/tmp}/check-vendor-XXXXXX")
if [ "${CHECK_VENDOR_KEEP:-}" = 1 ]; then
  trap 'echo "check-vendor: the pristine+patches tree is kept in $work/$name-$version"' EXIT
else
  trap 'rm -rf "$work"' EXIT
fi

# The pristine .crate: cargo's download cache if it has it, else crates.io.
crate=
for cached in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$name-$version.crate"; do
  if [ -f "$cached" ] && echo "$sha256  $cached" | sha256sum --check --status; then
    crate=$cached
    break
  fi
done
if [ -z "$crate" ]; then
  command -v curl > /dev/null || fail "curl is missing and $name-$version.crate is not in cargo's cache"
  crate=$work/$name-$version.crate
  url=https://static.crates.io/crates/$name/$name-$version.crate
  curl -sSfL --retry 3 -o "$crate" "$url" || fail "could not download $url"
fi
echo "$sha256  $crate" | sha256sum --check --status \
  || fail "$crate has sha256 $(sha256sum "$crate" | cut -d' ' -f1), expected $sha256"
echo "check-vendor: $name $version, sha256 $sha256 ($crate)"

tar -xzf "$crate" -C "$work"
tree=$work/$name-$version
[ -d "$tree" ] || fail "$crate did not unpack into $name-$version/"

shopt -s nullglob
list=("$patches"/[0-9][0-9][0-9][0-9]-*.patch)
[ ${#list[@]} -gt 0 ] || fail "no patches in $patches"
for p in "${list[@]}"; do
  # --forward: a patch already applied is an error, not a prompt to reverse it; --fuzz=0: each
  # patch must apply exactly where it was made.
  if ! out=$(patch -d "$tree" -p1 --forward --batch --fuzz=0 --no-backup-if-mismatch < "$p" 2>&1); then
    echo "$out" >&2
    fail "$p does not apply on top of the ones before it"
  fi
  echo "check-vendor: applied $(basename "$p")"
done

# .cargo-ok: the file cargo itself writes when it unpacks a crate into its registry (no .crate
# holds it). Nothing else is left out.
if ! diff -r --exclude=.cargo-ok "$tree" "$vendored" > "$work/differences" 2>&1; then
  cat "$work/differences" >&2
  fail "$vendored is not $name $version + $patches/*.patch (differences above; record a change to the vendored crate as a patch in $patches)"
fi
echo "check-vendor: OK: $vendored is $name $version + ${#list[@]} patches"
