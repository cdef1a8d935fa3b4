#!/usr/bin/env bash
# The observability check (.ci/run calls it): dashboards against Grafana's JSON Schema, their
# PromQL against a real Prometheus fed by a short bounded run (every panel's query must parse,
# return data and sum the shards away), `promtool check metrics` on every endpoint, the fleet
# totals of three shards read through the dashboards' queries, and the Rust tests that tie
# dashboards and metric names to the catalogue.
#
#   scripts/ci/observability.sh
#
# Source of the metrics (FLEETSIM_OBS_SOURCE):
#   cli (default): `fleetsim serve --metrics-addr` plus three `fleetsim run --shard I/3
#        --target` processes against it, each with its own --metrics-addr — the binary users
#        run, so a broken wiring fails the check. After the shards end (their endpoints
#        lingering), `check-dashboards.py shards` checks the panels read the sums of the
#        three reports, and shard 1's report with the shard variable on 1;
#   demo: the prom_demo example, a real emulator and a synthetic fleet through the same exporter
#        code (for working on dashboards without a run; no shards, no totals check).
# Ports: FLEETSIM_OBS_PORT_BASE (default 19460) .. +5, all on 127.0.0.1: the emulator's metrics,
# the emulator, Prometheus, then one metrics port per shard.
# Installs prometheus (Debian package) and jsonschema (pinned, pip) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
source_kind="${FLEETSIM_OBS_SOURCE:-cli}"
base="${FLEETSIM_OBS_PORT_BASE:-19460}"
emulator_metrics="127.0.0.1:$base"
emulator_listen="127.0.0.1:$((base + 1))"
prom_listen="127.0.0.1:$((base + 2))"
shards=3
fleet_metrics=()
for i in $(seq 0 $((shards - 1))); do fleet_metrics+=("127.0.0.1:$((base + 3 + i))"); done
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
    fleet_metrics=("${fleet_metrics[0]}")
    "$demo" fleet "${fleet_metrics[0]}" "$serve_s" >"$work/fleet-0.log" 2>&1 & pids+=($!)
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
    # The linger outlasts the query check below, so the totals are read from live endpoints.
    for i in $(seq 0 $((shards - 1))); do
      "$fleetsim" run scenarios/quickstart.toml --quiet --target "http://$emulator_listen" \
        --shard "$i/$shards" --set "run.duration=${run_seconds}s" \
        --metrics-addr "${fleet_metrics[$i]}" --metrics-linger 90s --out "$work/shard-$i.json" \
        >"$work/fleet-$i.log" 2>&1 & pids+=($!)
    done
    ;;
  *) echo "FLEETSIM_OBS_SOURCE must be demo or cli" >&2; exit 2 ;;
esac

cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: fleetsim-fleet
    static_configs: [{targets: [$(printf '"%s",' "${fleet_metrics[@]}" | sed 's/,$//')]}]
  - job_name: fleetsim-emulator
    static_configs: [{targets: ["$emulator_metrics"]}]
YAML
promtool check config "$work/prometheus.yml" >/dev/null
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="$prom_listen" --storage.tsdb.retention.time=1h \
  --log.level=warn >"$work/prometheus.log" 2>&1 & pids+=($!)
prom="http://$prom_listen"

endpoints=$((${#fleet_metrics[@]} + 1))
echo "== wait for all $endpoints endpoints to be scraped"
deadline=$((SECONDS + 60))
until curl -s "$prom/api/v1/query" --data-urlencode "query=count(up == 1) == $endpoints" \
    | grep -q '"result":\[{'; do
  if [ $SECONDS -gt $deadline ]; then
    echo "Prometheus never scraped all $endpoints endpoints" >&2
    cat "$work/prometheus.log" "$work"/fleet-*.log "$work/emulator.log" >&2
    exit 1
  fi
  sleep 0.5
done

echo "== promtool check metrics (fleet shards, emulator)"
for ep in "${fleet_metrics[@]}" "$emulator_metrics"; do
  curl -sf "http://$ep/metrics" >"$work/metrics.txt"
  if ! promtool check metrics <"$work/metrics.txt"; then
    echo "promtool check metrics failed for $ep" >&2
    exit 1
  fi
  echo "ok   $ep ($(grep -vc '^#' "$work/metrics.txt") samples)"
done

echo "== every dashboard query parses and returns data"
python3 scripts/observability/check-dashboards.py queries "$prom" "$root/dashboards" 90

if [ "$source_kind" = cli ]; then
  echo "== the panels read the fleet totals of the $shards shards"
  reports=()
  for i in $(seq 0 $((shards - 1))); do reports+=("$work/shard-$i.json"); done
  deadline=$((SECONDS + run_seconds + 60))
  # A shard says it lingers only after writing its report, so the report is complete then.
  for i in $(seq 0 $((shards - 1))); do
    until grep -q "metrics stay on" "$work/fleet-$i.log"; do
      if [ $SECONDS -gt $deadline ]; then
        echo "shard $i never finished its run" >&2
        cat "$work"/fleet-*.log >&2
        exit 1
      fi
      sleep 0.5
    done
  done
  python3 scripts/observability/check-dashboards.py shards "$prom" "$root/dashboards" \
    "${reports[@]}"
fi
echo "== observability check passed"
