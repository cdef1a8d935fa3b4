#!/usr/bin/env bash
# Microsoft's task-agent clients against `fleetsim serve`, with the real packages: the node
# client (azure-devops-node-api, pinned in node/package.json) and the Python client
# (azure-devops, pinned in python/requirements.txt) each make every agent and pool call they
# offer and assert the results (.ci/run calls this).
#
#   scripts/sdk/check.sh
#
# Installs the packages into target/sdk-check (npm ci / a venv), builds fleetsim, starts
# `fleetsim serve` on a free 127.0.0.1 port with a config file holding a fresh random PAT, and
# passes URL and PAT to the checks through the environment (never on a command line, so the PAT
# is in no log and no process listing). Exits non-zero with the failed call named.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
target="${CARGO_TARGET_DIR:-$root/target}"
work="$target/sdk-check"
mkdir -p "$work"
run="$(mktemp -d)"
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
  rm -rf "$run"
}
trap cleanup EXIT
fail() { echo "sdk check: FAILED: $*" >&2; exit 1; }

echo "== sdk: node packages (npm ci)"
command -v npm >/dev/null || fail "npm is not installed (node 20 + npm are needed)"
rm -rf "$work/node" && mkdir -p "$work/node"
cp scripts/sdk/node/package.json scripts/sdk/node/package-lock.json scripts/sdk/node/check.js "$work/node/"
(cd "$work/node" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci"

echo "== sdk: python packages (venv)"
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv" || fail "python3 -m venv (python3-venv is needed)"
fi
"$work/venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/sdk/python/requirements.txt \
  || fail "pip install -r scripts/sdk/python/requirements.txt"

echo "== sdk: build fleetsim"
cargo build -q -p fleetsim || fail "cargo build -p fleetsim"
bin="$target/debug/fleetsim"

echo "== sdk: start fleetsim serve"
pat="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
umask 077
cat >"$run/server.toml" <<TOML
# Modelled crypto: the clients register agents without an RSA key, as an admin script would.
crypto_mode = "modelled"
[[pats]]
token = "$pat"
scopes = ["fleetsim.admin", "vso.agentpools_manage", "vso.agentpools"]
TOML
"$bin" serve --listen 127.0.0.1:0 --config "$run/server.toml" >"$run/serve.log" 2>&1 &
serve_pid=$!
url=""
for _ in $(seq 1 200); do
  url="$(sed -n 's/^fleetsim: emulator listening on //p' "$run/serve.log")"
  [ -n "$url" ] && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$run/serve.log" >&2; fail "fleetsim serve exited"; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$run/serve.log" >&2; fail "fleetsim serve did not report its URL"; }
echo "emulator at $url"

status=0
echo "== sdk: node (azure-devops-node-api TaskAgentApi)"
(cd "$work/node" && FLEETSIM_SDK_URL="$url" FLEETSIM_SDK_PAT="$pat" node check.js) || status=1
echo "== sdk: python (azure-devops TaskAgentClient v7_1)"
FLEETSIM_SDK_URL="$url" FLEETSIM_SDK_PAT="$pat" "$work/venv/bin/python" scripts/sdk/python/check.py || status=1
if [ "$status" != 0 ]; then
  echo "-- fleetsim serve log" >&2; cat "$run/serve.log" >&2
  fail "an SDK call failed (see the FAIL line above)"
fi
echo "== sdk: both clients passed"
