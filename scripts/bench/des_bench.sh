#!/usr/bin/env bash
# Scale benchmark of the virtual-time driver (release build), one table at the end:
#   engine: the timing-wheel engine on the des.md §3.3 fleet model, 1 virtual hour
#   driver: the full agent + server state machines through `simulate`
# at 10^4, 10^5 and 10^6 agents (~5 minutes on the 2-core project machine when it is idle).
#
#   scripts/bench/des_bench.sh                  # both parts, all three sizes
#   scripts/bench/des_bench.sh engine 1000000   # the engine only, one size
#   scripts/bench/des_bench.sh driver 10000 100000
#   scripts/bench/des_bench.sh million          # scenarios/million.toml under /usr/bin/time -v
set -euo pipefail
cd "$(dirname "$0")/../.."
what="${1:-all}"; shift || true
case "$what" in
  all) cargo run --release -q -p fleetsim-des --example des_bench -- "$@" ;;
  engine) cargo run --release -q -p fleetsim-des --example des_bench -- --engine "$@" ;;
  driver|fleet) cargo run --release -q -p fleetsim-des --example des_bench -- --fleet "$@" ;;
  million)
    cargo build --release -q -p fleetsim
    bin="${CARGO_TARGET_DIR:-target}/release/fleetsim"
    /usr/bin/time -v "$bin" simulate scenarios/million.toml "$@" 2> >(grep -E \
      "Elapsed|Maximum resident|User time|System time" >&2)
    ;;
  *) echo "usage: $0 [all|engine|driver|million] [AGENTS...]" >&2; exit 2 ;;
esac
