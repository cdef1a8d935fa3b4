#!/usr/bin/env bash
# Does the calibrated twin predict the live emulator? (release build). Calibrate the embedded
# emulator, then at fractions of its capacity run the same scenario live and in virtual time
# with the profile, side by side: requests/s, jobs finished, pickup p50/p99, per-operation p99,
# and the live process's CPU per request. Prints markdown tables (docs/PLANNING.md has results).
#
#   scripts/bench/des_validate_live.sh                  # 25 50 75 90 % of capacity, 30 s points
#   scripts/bench/des_validate_live.sh 10 25            # other fractions (percent)
#   DURATION=60s scripts/bench/des_validate_live.sh     # longer points
#   PROFILE=p.toml scripts/bench/des_validate_live.sh   # reuse a profile, skip calibrating
#   CAPACITY=3000 scripts/bench/des_validate_live.sh    # fractions of 3,000 agents instead
#
# Capacity: the profile's `[demand] capacity_per_s` (for the embedded emulator: the cores the
# calibrating process obtained / its CPU per request, clients included) divided by the
# requests/s one agent of this scenario makes (from a 100-agent simulation). At the end, the
# saturation point of each side: the first fraction whose requests/s per agent fell more than
# 10 % below the lowest fraction's (the fleet no longer gets the service it asks for).
set -euo pipefail
cd "$(dirname "$0")/../.."
pcts=("$@"); [[ ${#pcts[@]} -gt 0 ]] || pcts=(25 50 75 90)
duration="${DURATION:-30s}"
out="${OUT:-target/des-validate-live}"
mkdir -p "$out"
rm -f "$out/points.txt"
cargo build --release -q -p fleetsim
bin="${CARGO_TARGET_DIR:-target}/release/fleetsim"

profile="${PROFILE:-$out/profile.toml}"
if [[ -z "${PROFILE:-}" ]]; then
  "$bin" calibrate --out "$profile"
fi

# One scenario, sized by $1 agents: ~3 s jobs keeping ~40% of the fleet busy, 5 s polls.
scenario() {
  local n=$1 rate
  rate=$(python3 -c "print(round($n * 0.4 / 3.0, 3))")
  cat > "$out/check-$n.toml" <<TOML
[run]
name = "des-validate-live-$n"
duration = "$duration"
warmup = "10s"
seed = 7

[fleet]
agents = $n
ramp_up = "5s"
distinct_keys = 16

[jobs]
rate_per_s = $rate
duration = { dist = "uniform", min = "2s", max = "4s" }
steps = 2
log_lines_per_s = 10
artifact_bytes = "4KiB"

[server]
long_poll_hold = "5s"
TOML
  echo "$out/check-$n.toml"
}

# Requests/s of one agent of this scenario, from a short simulation.
probe=$(scenario 100)
"$bin" simulate "$probe" --quiet --profile "$profile" --out "$out/per-agent.json" >/dev/null
capacity=$(python3 - "$profile" "$out/per-agent.json" "${CAPACITY:-}" <<'PY'
import json, sys, tomllib
profile = tomllib.load(open(sys.argv[1], "rb"))
per_agent = json.load(open(sys.argv[2]))["requests"]["rate_per_s"] / 100
if sys.argv[3]:
    print(sys.argv[3])
else:
    print(round(profile["demand"]["capacity_per_s"] / per_agent))
PY
)
echo "capacity: $capacity agents (PROFILE=$profile, DURATION=$duration)" >&2

for pct in "${pcts[@]}"; do
  n=$(python3 -c "print(max(1, round($capacity * $pct / 100)))")
  file=$(scenario "$n")
  /usr/bin/time -f "%e %U %S" -o "$out/live-$n.cpu" \
    "$bin" run "$file" --quiet --out "$out/live-$n.json" >/dev/null || true
  "$bin" simulate "$file" --quiet --profile "$profile" --out "$out/sim-$n.json" >/dev/null
  python3 - "$pct" "$n" "$out/live-$n.json" "$out/sim-$n.json" "$out/live-$n.cpu" \
    "$profile" <<'PY'
import json, os, sys, tomllib
pct, n = sys.argv[1], int(sys.argv[2])
live, sim = json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
wall, user, system = map(float, open(sys.argv[5]).read().split()[-3:])
demand = tomllib.load(open(sys.argv[6], "rb"))["demand"]
def err(m, p):
    return f"{(p - m) / m * 100:+.1f}%" if m else "n/a"
print(f"\n{pct}% of capacity — {n} agents\n"
      "| measure | live | simulated | error |\n|---|---|---|---|")
def row(name, m, p, unit=""):
    print(f"| {name} | {m:.4g}{unit} | {p:.4g}{unit} | {err(m, p)} |")
row("requests/s", live["requests"]["rate_per_s"], sim["requests"]["rate_per_s"])
jobs = lambda r: r["jobs"]["succeeded"] + r["jobs"]["failed"]
row("jobs finished", jobs(live), jobs(sim))
for q in ("p50", "p99"):
    row(f"pickup {q} (ms)", live["job_pickup"]["latency_s"][q] * 1e3,
        sim["job_pickup"]["latency_s"][q] * 1e3)
for op in sorted(set(live["operations"]) & set(sim["operations"])):
    if op in ("poll_message", "poll_empty", "keep_alive"):
        continue  # their round trip is the hold
    l, s = live["operations"][op]["latency_s"], sim["operations"][op]["latency_s"]
    if l["count"] >= 20:
        row(f"{op} p99 (ms)", l["p99"] * 1e3, s["p99"] * 1e3)
# The live process's CPU per request (clients and emulator) beside the emulator's own demand:
# what the model does not charge to the server is the difference.
# Cores the process used over its wall time, per request/s it served (start-up and drain
# included, so a slight overestimate).
rate = live["requests"]["rate_per_s"]
if rate and wall:
    cpu_ms = (user + system) / wall / rate * 1e3
    charged = demand.get("cpu_per_request_s")
    what = "profile's process CPU per request"
    if charged is None:
        charged, what = demand["cores"] / demand["capacity_per_s"], "profile's server demand"
    print(f"| CPU per request (ms): live process vs {what} | {cpu_ms:.3f} "
          f"| {charged * 1e3:.3f} | ×{cpu_ms / (charged * 1e3):.2f} |")
    print(f"| cores used by the live process | {(user + system) / wall:.2f} | "
          f"{demand.get('cores_obtained', demand['cores'])} (profile) | |")
PY
  echo "$pct $n $out/live-$n.json $out/sim-$n.json" >> "$out/points.txt"
done

# Where each side saturates: requests/s per agent more than 10 % below the lowest fraction's.
python3 - "$out/points.txt" "$capacity" <<'PY'
import json, sys
points = [l.split() for l in open(sys.argv[1]) if l.strip()]
points = sorted({int(p[1]): p for p in points}.values(), key=lambda p: int(p[1]))
def saturation(which):
    base, last = None, None
    for pct, n, live, sim in points:
        r = json.load(open(live if which == "live" else sim))["requests"]["rate_per_s"] / int(n)
        base = base or r
        if r < 0.9 * base:
            return f"between {last} and {n} agents" if last else f"at or below {n} agents"
        last = n
    return f"above {last} agents (every point kept up)"
print(f"\nsaturation — predicted capacity {sys.argv[2]} agents; "
      f"live: {saturation('live')}; simulated: {saturation('sim')}")
PY
