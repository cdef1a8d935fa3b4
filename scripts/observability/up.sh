#!/usr/bin/env bash
# Bring up a local Prometheus (Debian package) on 127.0.0.1 scraping fleetsim's metrics
# endpoints, and Grafana with fleetsim's provisioning when a grafana-server binary exists
# (Grafana is not packaged for Debian; install it from grafana.com yourself).
#
#   scripts/observability/up.sh [METRICS_ADDR ...]   # default 127.0.0.1:9464
#   scripts/observability/up.sh stop
#
# Then start a run with the same address, e.g.
#   fleetsim run scenarios/quickstart.toml --metrics-addr 127.0.0.1:9464 --metrics-linger 60s
# and open http://127.0.0.1:9090 (Prometheus) or http://127.0.0.1:3000 (Grafana, admin/admin).
# Everything listens on loopback only. State lives in ${FLEETSIM_OBS_DIR:-/tmp/fleetsim-obs};
# ports: FLEETSIM_PROMETHEUS_PORT (9090), FLEETSIM_GRAFANA_PORT (3000).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${FLEETSIM_OBS_DIR:-/tmp/fleetsim-obs}"
prom_port="${FLEETSIM_PROMETHEUS_PORT:-9090}"
grafana_port="${FLEETSIM_GRAFANA_PORT:-3000}"

stop() {
  for name in grafana prometheus; do
    if [ -f "$dir/$name.pid" ]; then
      kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
      rm -f "$dir/$name.pid"
      echo "stopped $name"
    fi
  done
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(127.0.0.1:9464)

if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
  else
    echo "prometheus is not installed: sudo apt-get install -y prometheus" >&2
    exit 1
  fi
fi
if [ -f "$dir/prometheus.pid" ] && kill -0 "$(cat "$dir/prometheus.pid")" 2>/dev/null; then
  echo "already running (pid $(cat "$dir/prometheus.pid")); run '$0 stop' first" >&2
  exit 1
fi
mkdir -p "$dir"
{
  echo "global: {scrape_interval: 1s, evaluation_interval: 1s}"
  echo "scrape_configs:"
  echo "  - job_name: fleetsim"
  printf '    static_configs: [{targets: ['
  sep=""
  for t in "${targets[@]}"; do printf '%s"%s"' "$sep" "$t"; sep=", "; done
  echo ']}]'
} >"$dir/prometheus.yml"
promtool check config "$dir/prometheus.yml" >/dev/null
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$prom_port" --storage.tsdb.retention.time=7d \
  --web.enable-lifecycle --log.level=warn >"$dir/prometheus.log" 2>&1 &
echo $! >"$dir/prometheus.pid"
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "Prometheus: http://127.0.0.1:$prom_port (scraping ${targets[*]} every 1s)"

grafana_bin="$(command -v grafana-server || command -v grafana || true)"
if [ -z "$grafana_bin" ]; then
  echo "Grafana: not installed (no Debian package). With Grafana installed elsewhere, provision"
  echo "  $repo/dashboards/provisioning with FLEETSIM_PROMETHEUS_URL=http://127.0.0.1:$prom_port"
  echo "  and FLEETSIM_DASHBOARDS_DIR=$repo/dashboards, or import dashboards/*.json by hand."
  exit 0
fi
mkdir -p "$dir/grafana"
export FLEETSIM_PROMETHEUS_URL="http://127.0.0.1:$prom_port"
export FLEETSIM_DASHBOARDS_DIR="$repo/dashboards"
export GF_PATHS_PROVISIONING="$repo/dashboards/provisioning"
export GF_PATHS_DATA="$dir/grafana"
export GF_SERVER_HTTP_ADDR=127.0.0.1
export GF_SERVER_HTTP_PORT="$grafana_port"
args=()
[ "$(basename "$grafana_bin")" = grafana ] && args+=(server)
homepath="${GRAFANA_HOME:-/usr/share/grafana}"
"$grafana_bin" "${args[@]}" --homepath "$homepath" >"$dir/grafana.log" 2>&1 &
echo $! >"$dir/grafana.pid"
echo "Grafana: http://127.0.0.1:$grafana_port (dashboards in folder 'fleetsim')"
