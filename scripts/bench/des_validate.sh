#!/usr/bin/env bash
# Queueing-theory validation of the virtual-time driver at full size (release build): the
# validation scenarios through the real agent and server cores, 10^5+ customers per point,
# several seeds, each point within 3 standard errors of the exact formula.
#
#   scripts/bench/des_validate.sh            # full: 12 seeds, 24 h virtual per M/M/1-type point
#   scripts/bench/des_validate.sh --quick    # 6 h per point (a few minutes)
#   scripts/bench/des_validate.sh --seeds 10
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run --release -q -p fleetsim-des --example des_validate -- "$@"
