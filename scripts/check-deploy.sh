#!/usr/bin/env bash
# Checks the deployment files under deploy/ (no cluster, no container engine needed):
#   - every kustomization builds with Debian 12's kubectl 1.20 (kustomize v2.0.3) and with the
#     kubectl on PATH when that is another one (kustomize v5), and both give the same objects;
#   - the objects pass strict schema validation (kubernetes-validate, Kubernetes $KUBE_VERSION);
#   - the speechvault.toml files are valid TOML;
#   - the Prometheus alert rules load (promtool check rules) and their unit tests pass
#     (promtool test rules).
# Installs what it needs when missing, idempotently and without starting any service: Debian's
# kubernetes-client, prometheus and prometheus-pushgateway packages are unpacked (apt-get
# download + dpkg-deb -x, never installed) into /opt/speechvault-tools; kubernetes-validate
# comes from PyPI. Exit status 0 when every check passed, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${SPEECHVAULT_TOOLS:-/opt/speechvault-tools}"
KUBE_VERSION="${KUBE_VERSION:-1.29.0}"
DEB_KUBECTL="$TOOLS/usr/bin/kubectl"
PROMTOOL="$TOOLS/usr/bin/promtool"

die() { echo "check-deploy: $*" >&2; exit 1; }

# ---- tools -------------------------------------------------------------------------------------
install_debs() {
  local missing=0 bin
  for bin in kubectl promtool prometheus-pushgateway; do
    [ -x "$TOOLS/usr/bin/$bin" ] || missing=1
  done
  [ $missing = 0 ] && return 0
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || die "need apt-get and dpkg-deb to fetch kubernetes-client, prometheus, prometheus-pushgateway (Debian)"
  echo "== unpacking kubernetes-client, prometheus, prometheus-pushgateway (Debian) into $TOOLS"
  local tmp
  tmp="$(mktemp -d)"
  chmod 0777 "$tmp"   # apt downloads as the _apt user
  if ! (cd "$tmp" && apt-get download -qq kubernetes-client prometheus prometheus-pushgateway >/dev/null 2>&1); then
    apt-get update -qq >/dev/null || die "apt-get update failed"
    (cd "$tmp" && apt-get download -qq kubernetes-client prometheus prometheus-pushgateway >/dev/null) \
      || die "apt-get download kubernetes-client prometheus prometheus-pushgateway failed"
  fi
  mkdir -p "$TOOLS"
  local deb
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$TOOLS"; done
  rm -rf "$tmp"
  for bin in kubectl promtool prometheus-pushgateway; do
    [ -x "$TOOLS/usr/bin/$bin" ] || die "$TOOLS/usr/bin/$bin missing after unpacking"
  done
}

KUBERNETES_VALIDATE=()
install_validate() {
  if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "== installing kubernetes-validate (PyPI)"
    python3 -m pip install --quiet kubernetes-validate || die "pip install kubernetes-validate failed"
  fi
  python3 -c 'import yaml, tomllib' 2>/dev/null || die "python3 needs PyYAML (comes with kubernetes-validate) and tomllib (Python 3.11+)"
  if command -v kubernetes-validate >/dev/null; then
    KUBERNETES_VALIDATE=(kubernetes-validate)
  else
    KUBERNETES_VALIDATE=(python3 -m kubernetes_validate)
  fi
}

install_debs
install_validate

# ---- checks ------------------------------------------------------------------------------------
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failed=0
passed=0

# check NAME COMMAND...: runs the command, prints one line; on failure also its output.
check() {
  local name="$1"
  shift
  if "$@" >"$WORK/out" 2>&1; then
    printf 'ok    %s\n' "$name"
    passed=$((passed + 1))
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$WORK/out" | tail -n 40
    failed=$((failed + 1))
  fi
}

# Builds a kustomization with one kubectl into a file; warnings (deprecated fields) are fine.
build() { "$1" kustomize "$2" >"$3"; }

# Both builds must give the same objects (kustomize v2.0.3 does not know every schema: a
# strategic merge it cannot interpret replaces whole lists, which only this comparison shows).
same_objects() {
  python3 - "$1" "$2" <<'EOF'
import sys, yaml
def load(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    return {(d.get("apiVersion"), d.get("kind"), d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}
a, b = load(sys.argv[1]), load(sys.argv[2])
diff = [k for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
for k in diff:
    print("differs between the two builds:", "/".join(str(x) for x in k))
sys.exit(1 if diff else 0)
EOF
}

# Every document must be a Kubernetes object that validates strictly (unknown fields fail).
validate() {
  [ -s "$1" ] || { echo "empty build"; return 1; }
  "${KUBERNETES_VALIDATE[@]}" --strict --kubernetes-version "$KUBE_VERSION" --quiet "$1"
}

toml_ok() { python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "$1"; }

path_kubectl="$(command -v kubectl || true)"
other_kubectl=""
if [ -n "$path_kubectl" ] && [ "$(readlink -f "$path_kubectl")" != "$(readlink -f "$DEB_KUBECTL")" ]; then
  other_kubectl="$path_kubectl"
fi
deb_version="$("$DEB_KUBECTL" version --client --short 2>/dev/null || "$DEB_KUBECTL" version --client 2>/dev/null | head -1)"
echo "kubectl (Debian): $deb_version"
if [ -n "$other_kubectl" ]; then
  echo "kubectl (PATH):   $("$other_kubectl" version --client 2>/dev/null | head -1) at $other_kubectl"
else
  echo "kubectl (PATH):   none other than Debian's; building with kustomize v2.0.3 only"
fi

cd "$ROOT"
kustomizations=$(find deploy/kubernetes -name kustomization.yaml -printf '%h\n' | sort)
[ -n "$kustomizations" ] || die "no kustomization.yaml under deploy/kubernetes"
for dir in $kustomizations; do
  out="$WORK/$(echo "$dir" | tr / _)"
  check "kustomize v2.0.3 (kubectl 1.20): $dir" build "$DEB_KUBECTL" "$dir" "$out.deb.yaml"
  check "kubernetes-validate --strict $KUBE_VERSION (v2.0.3 build): $dir" validate "$out.deb.yaml"
  if [ -n "$other_kubectl" ]; then
    check "kustomize (kubectl on PATH): $dir" build "$other_kubectl" "$dir" "$out.path.yaml"
    check "kubernetes-validate --strict $KUBE_VERSION (PATH build): $dir" validate "$out.path.yaml"
    check "same objects from both builds: $dir" same_objects "$out.deb.yaml" "$out.path.yaml"
  fi
done

for toml in $(find deploy/kubernetes -name '*.toml' | sort); do
  check "valid TOML: $toml" toml_ok "$toml"
done

check "promtool check rules deploy/prometheus/speechvault-alerts.yaml" \
  "$PROMTOOL" check rules deploy/prometheus/speechvault-alerts.yaml
check "promtool test rules deploy/prometheus/speechvault-alerts.test.yaml" \
  "$PROMTOOL" test rules deploy/prometheus/speechvault-alerts.test.yaml

echo "check-deploy: $passed passed, $failed failed"
[ "$failed" = 0 ]
