#!/usr/bin/env bash
# Calibration check (release build): calibrate against the embedded emulator, then for each
# fleet size run the same scenario live and in virtual time with the profile, and print the
# prediction error of request throughput, jobs finished and pickup p50/p99.
#
#   scripts/bench/calibrate.sh                # fleets of 20 and 100 agents, 60 s runs
#   scripts/bench/calibrate.sh 50 200         # other fleet sizes
#   DURATION=120s scripts/bench/calibrate.sh  # longer runs
#
# The test suite runs a small version of this (sim/cli/tests/plan_calibrate.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=("$@"); [[ ${#sizes[@]} -gt 0 ]] || sizes=(20 100)
duration="${DURATION:-60s}"
out="${OUT:-target/calibrate}"
mkdir -p "$out"
cargo build --release -q -p fleetsim
bin="${CARGO_TARGET_DIR:-target}/release/fleetsim"

"$bin" calibrate --out "$out/profile.toml"

for n in "${sizes[@]}"; do
  # ~3 s jobs keeping ~40% of the fleet busy; polls end after 5 s so pickups happen in the run.
  rate=$(python3 -c "print(round($n * 0.4 / 3.0, 3))")
  cat > "$out/check-$n.toml" <<TOML
[run]
name = "calibration-check-$n"
duration = "$duration"
warmup = "10s"
seed = 7

[fleet]
agents = $n
ramp_up = "5s"

[jobs]
rate_per_s = $rate
duration = { dist = "uniform", min = "2s", max = "4s" }
steps = 2
log_lines_per_s = 10
artifact_bytes = "4KiB"

[server]
long_poll_hold = "5s"
TOML
  "$bin" run "$out/check-$n.toml" --quiet --out "$out/live-$n.json" >/dev/null
  "$bin" simulate "$out/check-$n.toml" --quiet --profile "$out/profile.toml" \
    --out "$out/sim-$n.json" >/dev/null
  python3 - "$n" "$out/live-$n.json" "$out/sim-$n.json" <<'PY'
import json, sys
n, live, sim = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
def row(name, get, absolute=False):
    m, p = get(live), get(sim)
    if absolute:  # pickups are often 0 in virtual time: a difference says more than a ratio
        err = f"{p - m:+.4f} s"
    else:
        err = f"{(p - m) / m * 100:+.1f}%" if m else "n/a"
    print(f"| {n} | {name} | {m:.4f} | {p:.4f} | {err} |")
print(f"\n{n} agents:\n| agents | measure | live | simulated | error |\n|---|---|---|---|---|")
row("requests/s", lambda r: r["requests"]["rate_per_s"])
row("jobs finished", lambda r: r["jobs"]["succeeded"] + r["jobs"]["failed"])
row("pickup p50 (s)", lambda r: r["job_pickup"]["latency_s"]["p50"], True)
row("pickup p99 (s)", lambda r: r["job_pickup"]["latency_s"]["p99"], True)
PY
done
