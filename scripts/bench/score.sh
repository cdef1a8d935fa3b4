#!/usr/bin/env bash
# The performance score (issue 11): one JSON file a later run is compared with.
#   (a) the live fleet against a child emulator: CPU-seconds per 1,000 requests and RSS per agent
#       at 1,000 and 10,000 agents (scripts/bench/fleet10k.sh, shortened);
#   (b) the virtual-time driver's events/s at 10^4, 10^5 and 10^6 agents (des_bench, median of
#       RUNS runs).
#
#   scripts/bench/score.sh OUT.json                 # everything (~30 minutes on the 2-core machine)
#   PARTS=des scripts/bench/score.sh OUT.json       # only (b); PARTS=fleet only (a)
#   scripts/bench/score.sh OUT.json BASE.json       # then compare with an earlier score
#
# Knobs: RUNS (des runs per size, default 3), FLEET_SIZES ("1000 10000"), DES_SIZES
# ("10000 100000 1000000"), DURATION/WARMUP/RAMP for the fleet runs (default 4m/2m/1m), TOLERANCE
# for the comparison (default 0.10: a metric more than 10 % worse fails it).
# Compare two scores any time: scripts/bench/compare_score.py BASE.json CUR.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: score.sh OUT.json [BASE.json]}
base=${2:-}
PARTS=${PARTS:-fleet des}
RUNS=${RUNS:-3}
FLEET_SIZES=${FLEET_SIZES:-1000 10000}
DES_SIZES=${DES_SIZES:-10000 100000 1000000}
work=$(mktemp -d /tmp/fleetsim-score.XXXXXX)
parts=()

if [[ " $PARTS " == *" fleet "* ]]; then
  cargo build --release --quiet -p fleetsim
  for n in $FLEET_SIZES; do
    # A child emulator, so the fleet process's CPU and RSS are the fleet's alone.
    AGENTS=$n RATE=$(( n / 500 > 1 ? n / 500 : 1 )) DURATION=${DURATION:-4m} WARMUP=${WARMUP:-2m} \
      RAMP=${RAMP:-1m} OUT="$work/fleet-$n" SKIP_BUILD=1 EMULATOR_PROCESS=1 \
      scripts/bench/fleet10k.sh | tee "$work/fleet-$n.txt"
    jq --arg n "$n" '[
      {name: "fleet_cpu_s_per_1k_requests_\($n)", value: .cpu_s_per_1k_requests, unit: "CPU-s", better: "lower"},
      {name: "fleet_rss_kib_per_agent_\($n)", value: .rss_kib_per_agent, unit: "KiB", better: "lower"}]' \
      "$work/fleet-$n/figures.json" >"$work/part-fleet-$n.json"
    parts+=("$work/part-fleet-$n.json")
  done
fi

if [[ " $PARTS " == *" des "* ]]; then
  # shellcheck disable=SC2086 # sizes are words
  cargo run --release -q -p fleetsim-des --example des_bench -- --fleet --runs "$RUNS" \
    --json "$work/des.json" $DES_SIZES
  jq '.metrics' "$work/des.json" >"$work/part-des.json"
  parts+=("$work/part-des.json")
fi

jq -s --arg commit "$(git rev-parse --short HEAD)" --arg date "$(date -u +%FT%TZ)" \
  --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
  '{commit: $commit, date: $date, loadavg: $load, metrics: add}' "${parts[@]}" >"$out"
echo "score written to $out"
[ -z "$base" ] || scripts/bench/compare_score.py "$base" "$out" --tolerance "${TOLERANCE:-0.10}"
