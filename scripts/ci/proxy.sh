#!/usr/bin/env bash
# Start or stop a local tinyproxy for trying fleetsim's proxy path by hand (the tests start their
# own). Loopback only; Basic auth when a user and password are given.
#
#   scripts/ci/proxy.sh start [PORT] [USER PASSWORD]   # prints the proxy URL, e.g. for VSTS_HTTP_PROXY
#   scripts/ci/proxy.sh stop
#   scripts/ci/proxy.sh log                            # the requests tinyproxy saw
#
# State lives in ${FLEETSIM_PROXY_DIR:-/tmp/fleetsim-proxy}. Installs tinyproxy when missing and
# running as root (Debian), as .ci/run does.
set -euo pipefail
dir="${FLEETSIM_PROXY_DIR:-/tmp/fleetsim-proxy}"
cmd="${1:-}"

case "$cmd" in
  start)
    port="${2:-8888}"
    user="${3:-}"
    password="${4:-}"
    if ! command -v tinyproxy >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tinyproxy
      else
        echo "tinyproxy is not installed (apt-get install -y tinyproxy)" >&2
        exit 1
      fi
    fi
    if [ -f "$dir/tinyproxy.pid" ] && kill -0 "$(cat "$dir/tinyproxy.pid")" 2>/dev/null; then
      echo "a tinyproxy from this script is already running (pid $(cat "$dir/tinyproxy.pid")); stop it first" >&2
      exit 1
    fi
    mkdir -p "$dir"
    {
      echo "Port $port"
      echo "Listen 127.0.0.1"
      echo "Timeout 120"
      echo "LogFile \"$dir/tinyproxy.log\""
      echo "LogLevel Info"
      echo "MaxClients 1024"
      echo "Allow 127.0.0.1"
      echo "DisableViaHeader Yes"
      if [ -n "$user" ]; then echo "BasicAuth $user $password"; fi
    } > "$dir/tinyproxy.conf"
    : > "$dir/tinyproxy.log"
    tinyproxy -d -c "$dir/tinyproxy.conf" >/dev/null 2>&1 &
    echo $! > "$dir/tinyproxy.pid"
    # Wait (bounded) until the port accepts connections.
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        if [ -n "$user" ]; then
          echo "http://$user:$password@127.0.0.1:$port"
        else
          echo "http://127.0.0.1:$port"
        fi
        exit 0
      fi
      sleep 0.05
    done
    echo "tinyproxy did not start; see $dir/tinyproxy.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/tinyproxy.pid" ]; then
      kill "$(cat "$dir/tinyproxy.pid")" 2>/dev/null || true
      rm -f "$dir/tinyproxy.pid"
    fi
    ;;
  log)
    cat "$dir/tinyproxy.log"
    ;;
  *)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
