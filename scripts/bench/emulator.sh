#!/usr/bin/env bash
# Emulator request rate over loopback: registration + token exchange, and the poll/ack path.
# Builds the release example and runs it against an in-process emulator on 127.0.0.1 (or pass
# --addr 127.0.0.1:PORT to target a running `fleetsim serve`; FLEETSIM_PAT must then match).
# Every loop is bounded by count and by --max-secs. Extra flags go to the example, e.g.
#   scripts/bench/emulator.sh --registrations 2000 --agents 64 --jobs 20000
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run --release --quiet -p fleetsim-live --example emulator_bench -- "$@"
