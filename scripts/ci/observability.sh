#!/usr/bin/env bash
# The observability check (.ci/run calls it): dashboards against Grafana's JSON Schema, their
# PromQL against a real Prometheus fed by a short bounded run (every panel's query must parse and
# return data), `promtool check metrics` on both endpoints (fleet and emulator), and the Rust
# tests that tie dashboards and metric names to the catalogue.
#
#   scripts/ci/observability.sh
#
# Source of the metrics (FLEETSIM_OBS_SOURCE):
#   cli (default): `fleetsim serve --metrics-addr` plus a short `fleetsim run --target` against
#        it — the binary users run, so a broken wiring fails the check;
#   demo: the prom_demo example, a real emulator and a synthetic fleet through the same exporter
#        code (for working on dashboards without a run).
# Ports: FLEETSIM_OBS_PORT_BASE (default 19460) .. +4, all on 127.0.0.1.
# Installs prometheus (Debian package) and jsonschema (pinned, pip) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
source_kind="${FLEETSIM_OBS_SOURCE:-cli}"
base="${FLEETSIM_OBS_PORT_BASE:-19460}"
fleet_metrics="127.0.0.1:$base"
emulator_metrics="127.0.0.1:$((base + 1))"
emulator_listen="127.0.0.1:$((base + 2))"
prom_listen="127.0.0.1:$((base + 3))"
run_seconds=25
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== tools"
if ! command -v promtool >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
if ! python3 -c 'import jsonschema' 2>/dev/null; then
  python3 -m pip install --quiet 'jsonschema==4.26.0'
fi
prometheus --version 2>&1 | head -1

echo "== dashboards: JSON Schema"
python3 scripts/observability/check-dashboards.py schema

echo "== dashboards and metric names: Rust tests"
cargo test -q -p fleetsim-live --test prom_dashboards --test prom_endpoint
cargo test -q -p fleetsim-metrics --lib names

echo "== start the metrics sources ($source_kind)"
case "$source_kind" in
  demo)
    cargo build -q -p fleetsim-live --example prom_demo
    demo="${CARGO_TARGET_DIR:-target}/debug/examples/prom_demo"
    serve_s=$((run_seconds + 90))
    "$demo" fleet "$fleet_metrics" "$serve_s" >"$work/fleet.log" 2>&1 & pids+=($!)
    "$demo" emulator "$emulator_metrics" "$serve_s" >"$work/emulator.log" 2>&1 & pids+=($!)
    ;;
  cli)
    cargo build -q -p fleetsim
    fleetsim="${CARGO_TARGET_DIR:-target}/debug/fleetsim"
    export FLEETSIM_PAT="${FLEETSIM_PAT:-fleetsim-observability-check}"
    "$fleetsim" serve --listen "$emulator_listen" --metrics-addr "$emulator_metrics" \
      >"$work/emulator.log" 2>&1 & pids+=($!)
    for _ in $(seq 1 100); do
      (exec 3<>"/dev/tcp/${emulator_listen%:*}/${emulator_listen#*:}") 2>/dev/null && break
      sleep 0.1
    done
    "$fleetsim" run scenarios/quickstart.toml --quiet --target "http://$emulator_listen" \
      --set "run.duration=${run_seconds}s" --metrics-addr "$fleet_metrics" \
      --metrics-linger 90s >"$work/fleet.log" 2>&1 & pids+=($!)
    ;;
  *) echo "FLEETSIM_OBS_SOURCE must be demo or cli" >&2; exit 2 ;;
esac

cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: fleetsim-fleet
    static_configs: [{targets: ["$fleet_metrics"]}]
  - job_name: fleetsim-emulator
    static_configs: [{targets: ["$emulator_metrics"]}]
YAML
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="$prom_listen" --storage.tsdb.retention.time=1h \
  --log.level=warn >"$work/prometheus.log" 2>&1 & pids+=($!)
prom="http://$prom_listen"

echo "== wait for both endpoints to be scraped"
deadline=$((SECONDS + 60))
until curl -s "$prom/api/v1/query" --data-urlencode 'query=count(up == 1) == 2' \
    | grep -q '"result":\[{'; do
  if [ $SECONDS -gt $deadline ]; then
    echo "Prometheus never scraped both endpoints" >&2
    cat "$work/prometheus.log" "$work/fleet.log" "$work/emulator.log" >&2
    exit 1
  fi
  sleep 0.5
done

echo "== promtool check metrics (fleet, emulator)"
for ep in "$fleet_metrics" "$emulator_metrics"; do
  curl -sf "http://$ep/metrics" >"$work/metrics.txt"
  if ! promtool check metrics <"$work/metrics.txt"; then
    echo "promtool check metrics failed for $ep" >&2
    exit 1
  fi
  echo "ok   $ep ($(grep -vc '^#' "$work/metrics.txt") samples)"
done

echo "== every dashboard query parses and returns data"
python3 scripts/observability/check-dashboards.py queries "$prom" "$root/dashboards" 90
echo "== observability check passed"
