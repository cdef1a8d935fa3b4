#!/usr/bin/env bash
# A 10,000-agent steady run against the embedded emulator, with the CPU and RSS of the fleet
# process and of the emulator (which `fleetsim run` moves to a child process when both ends of
# the fleet's connections do not fit in the open-file limit; with 20,000 descriptors they do not).
#
#   scripts/bench/fleet10k.sh                 # 10,000 agents, 20 jobs/s, 8 min (2 ramp + 3 warm-up)
#   AGENTS=2000 DURATION=4m scripts/bench/fleet10k.sh
#   PROCESSES=5 scripts/bench/fleet10k.sh     # the same fleet as 5 shard processes (run --processes)
#
# Knobs (environment): AGENTS, RATE (jobs/s), DURATION, WARMUP, RAMP, OUT (output directory),
# SAMPLE (seconds between samples), PROCESSES (> 1: `--processes N --emulator-process`, the fleet
# being the parent and its N shard children), EMULATOR_PROCESS=1 (the emulator in a child process
# even when it would fit in this one, so the fleet's figures are its own), SKIP_BUILD=1 (use the
# release binary as built).
# Prints the exact command, then the figures: agents, CPU % (100 % = one core) and RSS of the
# fleet (summed over its processes; PSS too, which counts shared pages once) and of the emulator
# averaged over the measured window (after ramp-up and warm-up), the fleet's CPU per 1,000
# requests and RSS per agent, requests/s and job pickup p50/p99 from the report (the first two
# also as JSON in $OUT/figures.json, for scripts/bench/score.sh). Samples go to $OUT/samples.csv,
# the report to $OUT/report.json, progress lines to $OUT/run.log.
#
# Measured 2026-11-26 on the 2-core / 24 GiB build machine (shared with other builds, load ~5),
# release build, fd limit 20,000 (so the emulator ran as a child process; keep-alive connections
# closed between polls), 1,000 cached keys, two runs of the default command:
#   agents 10,000 · requests 4,988–5,049/s · pickup p50 24–52 ms, p99 0.70–1.21 s · 0 errors · lost 0
#   fleet process:    CPU 43–44 % of one core (mean over 180–480 s), RSS max 739–755 MB
#   emulator process: CPU 32 % of one core,                         RSS max 1.32–1.33 GB
# (the emulator keeps its last 10,000 finished jobs with their logs and artifacts: most of its RSS)
set -euo pipefail
cd "$(dirname "$0")/../.."

AGENTS=${AGENTS:-10000}
RATE=${RATE:-20}
DURATION=${DURATION:-8m}
WARMUP=${WARMUP:-3m}
RAMP=${RAMP:-2m}
SAMPLE=${SAMPLE:-5}
PROCESSES=${PROCESSES:-1}
OUT=${OUT:-$(mktemp -d /tmp/fleet10k.XXXXXX)}
mkdir -p "$OUT"

secs() { # 90s, 3m, 1h → seconds
  local v=$1
  case $v in
    *h) echo $(( ${v%h} * 3600 )) ;;
    *m) echo $(( ${v%m} * 60 )) ;;
    *s) echo "${v%s}" ;;
    *) echo "$v" ;;
  esac
}

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet -p fleetsim
BIN=${CARGO_TARGET_DIR:-target}/release/fleetsim

CMD=("$BIN" run scenarios/steady.toml
  --set "fleet.agents=$AGENTS" --set "jobs.rate_per_s=$RATE"
  --set "run.duration=\"$DURATION\"" --set "run.warmup=\"$WARMUP\"" --set "fleet.ramp_up=\"$RAMP\""
  --out "$OUT/report.json")
if [ "$PROCESSES" -gt 1 ]; then
  CMD+=(--processes "$PROCESSES" --emulator-process)
elif [ -n "${EMULATOR_PROCESS:-}" ]; then
  CMD+=(--emulator-process)
fi
echo "command: ${CMD[*]}"

"${CMD[@]}" >"$OUT/summary.txt" 2>"$OUT/run.log" &
FLEET=$!
TICK=$(getconf CLK_TCK)
# The fleet is the run process and its shard children; the emulator is its `serve` child.
# shellcheck disable=SC2046 # pgrep prints one pid per line: words
fleet_pids() { echo "$FLEET" $(pgrep -P "$FLEET" -f -- ' --shard ' || true); }
sum_over() { local f=$1 t=0 p; shift; for p in "$@"; do t=$(( t + $($f "$p") )); done; echo "$t"; }
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_of() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

echo "t_s,fleet_cpu_pct,fleet_rss_mb,emulator_cpu_pct,emulator_rss_mb,fleet_pss_mb,fleet_cpu_ticks" >"$OUT/samples.csv"
start=$(date +%s.%N)
prev_t=$start
prev_f=$(ticks_of "$FLEET")
prev_e=0
run_t0=0
EMU=""
while kill -0 "$FLEET" 2>/dev/null; do
  sleep "$SAMPLE"
  now=$(date +%s.%N)
  if [ -z "$EMU" ]; then
    EMU=$(pgrep -P "$FLEET" -f ' serve ' | head -n1 || true)
    prev_e=$( [ -n "$EMU" ] && ticks_of "$EMU" || echo 0)
    # The run's clock starts when its emulator does (after key generation on a cold key cache).
    [ -n "$EMU" ] && run_t0=$(awk -v a="$now" -v b="$start" 'BEGIN { printf "%d", a - b }')
  fi
  # shellcheck disable=SC2046 # the pids are words
  f=$(sum_over ticks_of $(fleet_pids)); e=$( [ -n "$EMU" ] && ticks_of "$EMU" || echo 0)
  # shellcheck disable=SC2046
  awk -v t="$now" -v t0="$start" -v pt="$prev_t" -v f="$f" -v pf="$prev_f" -v e="$e" -v pe="$prev_e" \
      -v hz="$TICK" -v fr="$(sum_over rss_of $(fleet_pids))" -v fp="$(sum_over pss_of $(fleet_pids))" \
      -v er="$( [ -n "$EMU" ] && rss_of "$EMU" || echo 0)" \
      'BEGIN { dt = t - pt; printf "%.0f,%.1f,%.1f,%.1f,%.1f,%.1f,%d\n", t - t0,
               100 * (f - pf) / hz / dt, fr / 1024, 100 * (e - pe) / hz / dt, er / 1024, fp / 1024, f }' \
      >>"$OUT/samples.csv"
  prev_t=$now; prev_f=$f; prev_e=$e
done
set +e
wait "$FLEET"
code=$?
set -e

# The measured window: after ramp-up and warm-up, before the run's end (drain excluded).
# Run time counts from the emulator's start (run_t0 seconds into the samples; 0 in-process).
from=$(( $(secs "$RAMP") > $(secs "$WARMUP") ? $(secs "$RAMP") : $(secs "$WARMUP") ))
to=$(secs "$DURATION")
echo "exit code $code; emulator pid ${EMU:-in-process}; outputs in $OUT"
grep -m1 -o 'embedded emulator in [a-z ]*[0-9]*' "$OUT/summary.txt" || true
awk -F, -v from="$from" -v to="$to" -v t0run="$run_t0" -v agents="$AGENTS" -v hz="$TICK" -v json="$OUT/figures.json" \
    -v reqs="$(jq '[.timeseries[] | select(.t_s >= '"$from"' and .t_s < '"$to"') | .requests] | add // 0' "$OUT/report.json")" \
    'NR > 1 && $7 > 0 && $1 - t0run >= from && $1 - t0run <= to + 5 {
    if (!n) { t0 = $1; k0 = $7 } t1 = $1; k1 = $7
    n++; fc += $2; ec += $4; if ($3 > fm) fm = $3; if ($5 > em) em = $5; if ($6 > fp) fp = $6 }
  END { if (n) {
        printf "window %ss–%ss (%d samples): fleet CPU %.0f%% RSS max %.0f MB (PSS %.0f MB) · emulator CPU %.0f%% RSS max %.0f MB\n",
          from, to, n, fc / n, fm, fp, ec / n, em
        # CPU-seconds over the samples window against the requests of the same seconds.
        rate = reqs / (to - from)
        if (rate > 0 && t1 > t0)
          printf "fleet: %.3f CPU-s per 1,000 requests · RSS %.1f KiB per agent (PSS %.1f KiB)\n",
            (k1 - k0) / hz / (t1 - t0) / rate * 1000, fm * 1024 / agents, fp * 1024 / agents
        if (rate > 0 && t1 > t0)
          printf "{\"agents\": %d, \"cpu_s_per_1k_requests\": %.5f, \"rss_kib_per_agent\": %.2f, \"pss_kib_per_agent\": %.2f, \"requests_per_s\": %.1f}\n",
            agents, (k1 - k0) / hz / (t1 - t0) / rate * 1000, fm * 1024 / agents, fp * 1024 / agents, rate > json } }' \
  "$OUT/samples.csv"
jq -r --arg agents "$AGENTS" '"agents \($agents) · requests \(.requests.count) at \(.requests.rate_per_s | floor)/s · " +
  "pickup p50 \(.job_pickup.latency_s.p50 * 1000 | floor) ms p99 \(.job_pickup.latency_s.p99 * 1000 | floor) ms · " +
  "jobs queued \(.jobs.queued) ok \(.jobs.succeeded) failed \(.jobs.failed) lost \(.jobs.lost) · errors \(.errors.count)"' \
  "$OUT/report.json"
