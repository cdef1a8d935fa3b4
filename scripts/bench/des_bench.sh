#!/usr/bin/env bash
# Events/s of the virtual-time driver (release build):
#   engine: the timing-wheel engine on the des.md §3.3 fleet model (10^4, 10^5, 10^6 agents)
#   fleet:  the full agent + server state machines through `simulate` (idle-heavy fleet)
#
#   scripts/bench/des_bench.sh                 # both, default sizes
#   scripts/bench/des_bench.sh engine 1000000  # one engine size
#   scripts/bench/des_bench.sh fleet 10000 100000
set -euo pipefail
cd "$(dirname "$0")/../.."
what="${1:-all}"; shift || true
if [[ "$what" == engine || "$what" == all ]]; then
  cargo run --release -q -p fleetsim-des --example des_bench -- "$@"
fi
if [[ "$what" == fleet || "$what" == all ]]; then
  cargo run --release -q -p fleetsim-des --example des_bench -- --fleet "$@"
fi
