#!/usr/bin/env python3
"""Generate dashboards/*.json (Grafana classic dashboard model, schemaVersion 39).

The dashboards are data kept here so their conventions hold everywhere: a `datasource`
template variable used by every panel and target, `job` and `shard` variables every selector
filters on with =~ (so a checker can substitute `.*`), stable uids, a unit on every panel,
`$__rate_interval` in every rate(), histogram_quantile over `_bucket` with `sum by (le)`,
shared crosshair.

Across shards: every series carries a `shard` label (one value per `fleetsim run --shard I/N`
process, "0" when unsharded), and every query aggregates it away (`sum`, `sum by (...)` without
`shard`, `max` for the run clock), so with `shard` = All a panel shows the whole fleet and with
one shard picked it shows that shard alone.

Run from the repository root after changing a panel:
    python3 scripts/observability/gen-dashboards.py
The check (scripts/ci/observability.sh and sim/live/tests/prom_dashboards.rs) validates the
output; it never regenerates it.
"""
import json
import os

SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
# Every selector: the job and shard variables (both multi-value, hence =~).
J = 'job=~"$job",shard=~"$shard"'
RI = "$__rate_interval"


def q(expr, legend="__auto"):
    return {"expr": expr, "legendFormat": legend}


def rate(metric, sel="", by=None):
    inner = f"rate({metric}{{{J}{',' + sel if sel else ''}}}[{RI}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(p, metric, sel="", by="le", window=True):
    s = f"{{{J}{',' + sel if sel else ''}}}"
    inner = f"rate({metric}_bucket{s}[{RI}])" if window else f"{metric}_bucket{s}"
    return f"histogram_quantile({p}, sum by ({by}) ({inner}))"


def zero_if_none(expr, base):
    """`expr`, or 0 while `base` has data but `expr` has no series yet (no errors so far).
    Keeps the panel honest: a misspelt `base` still returns nothing."""
    return f"(({expr}) or ({base} * 0))"


class Board:
    def __init__(self, uid, title, tags, description):
        self.d = {
            "uid": uid,
            "title": title,
            "description": description,
            "tags": ["fleetsim"] + tags,
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": "5s",
            "time": {"from": "now-15m", "to": "now"},
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "links": [],
            "annotations": {"list": []},
            "templating": {"list": [
                {"type": "datasource", "name": "datasource", "label": "Data source",
                 "query": "prometheus", "hide": 0, "refresh": 1, "regex": "",
                 "options": [], "skipUrlSync": False},
                {"type": "query", "name": "job", "label": "Job", "datasource": DS,
                 "query": "label_values(fleetsim_build_info, job)",
                 "definition": "label_values(fleetsim_build_info, job)",
                 "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
                 "options": [], "hide": 0, "sort": 1, "regex": "",
                 "skipUrlSync": False},
                # All by default: panels sum the shards into the whole fleet; picking shards
                # narrows every panel to them. Sorted numerically (sort 3).
                {"type": "query", "name": "shard", "label": "Shard", "datasource": DS,
                 "query": 'label_values(fleetsim_build_info{job=~"$job"}, shard)',
                 "definition": 'label_values(fleetsim_build_info{job=~"$job"}, shard)',
                 "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
                 "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                 "options": [], "hide": 0, "sort": 3, "regex": "",
                 "skipUrlSync": False},
            ]},
            "panels": [],
        }
        self.x = 0
        self.y = 0
        self.row_h = 0

    def panel(self, kind, title, unit, targets, w=12, h=8, description="", **extra):
        if self.x + w > 24:
            self.x, self.y = 0, self.y + self.row_h
            self.row_h = 0
        pid = len(self.d["panels"]) + 1
        p = {
            "id": pid,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
            if kind == "timeseries" else
            {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
            "targets": [dict(t, refId=chr(ord("A") + i), datasource=DS)
                        for i, t in enumerate(targets)],
        }
        p.update(extra)
        self.d["panels"].append(p)
        self.x += w
        self.row_h = max(self.row_h, h)

    def row(self, title):
        self.x, self.y = 0, self.y + self.row_h
        self.row_h = 0
        self.d["panels"].append({
            "id": len(self.d["panels"]) + 1, "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def add_variable(self, v):
        self.d["templating"]["list"].append(v)

    def write(self, path):
        with open(path, "w") as f:
            json.dump(self.d, f, indent=2)
            f.write("\n")


OPS = "fleetsim_operations_total"
LAT = "fleetsim_operation_duration_seconds"
PICK = "fleetsim_job_pickup_duration_seconds"
NOT_HELD = 'operation!="poll_empty"'


def fleet_overview():
    b = Board("fleetsim-fleet-overview", "fleetsim · fleet overview", ["fleet"],
              "A live run (fleetsim run --metrics-addr): throughput, latency from the intended "
              "start, errors, agents by state, job pickup, tokens and crypto.")
    b.add_variable({
        "type": "query", "name": "operation", "label": "Operation", "datasource": DS,
        "query": f"label_values({LAT}_bucket, operation)",
        "definition": f"label_values({LAT}_bucket, operation)",
        "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
        "options": [], "hide": 0, "sort": 1, "regex": "", "skipUrlSync": False})
    b.row("Now")
    b.panel("stat", "Requests per second", "reqps", [q(rate(OPS))], w=5, h=4)
    b.panel("stat", "Error ratio", "percentunit",
            [q(zero_if_none(rate(OPS, 'outcome!="ok"'), rate(OPS)) + " / " + rate(OPS))],
            w=5, h=4, description="Failed calls over all calls (threshold errors.rate).")
    b.panel("stat", "Busy agents", "short",
            [q(f'sum(fleetsim_agents{{{J},state="busy"}})')], w=5, h=4)
    b.panel("stat", "Job pickup p95", "s", [q(quantile(0.95, PICK))], w=5, h=4)
    # The sums below cover only the shards Prometheus scrapes: a shard that is down or not
    # scraped vanishes from them silently, so say how many fleet processes are in them.
    b.panel("stat", "Fleet processes scraped", "short",
            [q(f'count(fleetsim_build_info{{{J},role="fleet"}})')], w=4, h=4,
            description="Fleet processes (shards) in these panels' sums; compare with the "
                        "run's shard count N of --shard I/N.")
    b.row("Traffic and latency")
    b.panel("timeseries", "Calls per second by operation", "reqps",
            [q(rate(OPS, by="operation"), "{{operation}}")])
    b.panel("timeseries", "Failed calls per second by outcome", "reqps",
            [q(zero_if_none(rate(OPS, 'outcome!="ok"', by="outcome"),
                            f'label_replace({rate(OPS)}, "outcome", "none", "", "")'),
               "{{outcome}}")],
            description="Error labels are bounded: ErrorKind labels, http_4xx/5xx, transport.")
    b.panel("timeseries", "Call latency (all but empty long polls)", "s", [
        q(quantile(0.5, LAT, NOT_HELD), "p50"),
        q(quantile(0.95, LAT, NOT_HELD), "p95"),
        q(quantile(0.99, LAT, NOT_HELD), "p99"),
    ], description="From the intended start of each call (no coordinated omission).")
    b.panel("timeseries", "p99 latency by operation", "s",
            [q(quantile(0.99, LAT, 'operation=~"$operation"', by="le, operation"),
               "{{operation}}")])
    b.row("Agents and jobs")
    b.panel("timeseries", "Agents by state", "short",
            [q(f"sum by (state) (fleetsim_agents{{{J}}})", "{{state}}")],
            fieldConfig={"defaults": {"unit": "short", "custom": {"stacking": {"mode": "normal"},
                                                                   "fillOpacity": 30}},
                         "overrides": []})
    b.panel("timeseries", "Job pickup latency", "s", [
        q(quantile(0.5, PICK), "p50"),
        q(quantile(0.95, PICK), "p95"),
        q(quantile(0.99, PICK), "p99"),
    ], description="Queued until an agent holds the job message; a bucket bound sits on 30 s.")
    b.panel("timeseries", "Jobs per second by event", "ops",
            [q(rate("fleetsim_jobs_total", by="event"), "{{event}}")])
    b.panel("timeseries", "Token exchanges and rotations per second", "ops", [
        q(rate(OPS, 'operation="token_exchange"'), "exchanges"),
        q(rate("fleetsim_token_rotations_total"), "rotations"),
    ])
    b.panel("timeseries", "Secret occurrences masked per second", "ops",
            [q(rate("fleetsim_secrets_masked_total"), "masked")],
            description="Masked by the agents before logs leave them; the emulator counts leaks.")
    b.panel("timeseries", "Faults applied per second by kind", "ops",
            [q(rate("fleetsim_faults_total", by="kind"), "{{kind}}")],
            description="Scenario [[faults]] the fleet applied, counted as each one's effect ends.")
    b.row("Crypto (agents)")
    b.panel("timeseries", "Crypto operations per second", "ops",
            [q(rate("fleetsim_crypto_operations_total", 'side="agents"', by="op"), "{{op}}")],
            w=8)
    b.panel("timeseries", "Crypto throughput", "Bps",
            [q(rate("fleetsim_crypto_bytes_total", 'side="agents"', by="op"), "{{op}}")], w=8)
    b.panel("timeseries", "Cores busy with crypto", "short",
            [q(rate("fleetsim_crypto_busy_seconds", 'side="agents"', by="op"), "{{op}}")], w=8,
            description="Seconds of crypto per second of run.")
    return b


def emulator_server():
    b = Board("fleetsim-emulator-server", "fleetsim · emulator server", ["emulator"],
              "The emulator (fleetsim serve --metrics-addr): requests by route and status, "
              "long polls, queue, sessions, leases, requeues, leaked secrets, shedding.")
    R = "fleetsim_emulator_requests_total"
    b.row("Now")
    b.panel("stat", "Requests per second", "reqps", [q(rate(R))], w=6, h=4)
    b.panel("stat", "Non-2xx ratio", "percentunit",
            [q(zero_if_none(rate(R, 'status!~"2.."'), rate(R)) + " / " + rate(R))], w=6, h=4)
    b.panel("stat", "Leaked secrets", "short",
            [q(f"sum(fleetsim_emulator_leaked_secrets_total{{{J}}})")], w=6, h=4,
            description="Must stay 0.",
            fieldConfig={"defaults": {"unit": "short", "thresholds": {"mode": "absolute", "steps": [
                {"color": "green", "value": None}, {"color": "red", "value": 1}]}},
                "overrides": []})
    b.panel("stat", "Parked long polls", "short",
            [q(f"sum(fleetsim_emulator_parked_polls{{{J}}})")], w=6, h=4)
    b.row("Requests")
    b.panel("timeseries", "Requests per second by route", "reqps",
            [q(rate(R, by="route"), "{{route}}")])
    b.panel("timeseries", "Requests per second by status", "reqps",
            [q(rate(R, by="status"), "{{status}}")])
    b.panel("timeseries", "Shed requests per second (429, 503)", "reqps",
            [q(rate("fleetsim_emulator_shed_requests_total"), "shed")])
    b.panel("timeseries", "Connections", "short", [
        q(f"sum(fleetsim_emulator_open_connections{{{J}}})", "open"),
        q(rate("fleetsim_emulator_accepted_connections_total"), "accepted/s"),
        q(rate("fleetsim_emulator_rejected_connections_total"), "rejected/s"),
        q(rate("fleetsim_emulator_tls_handshake_failures_total"), "TLS failures/s"),
        q(rate("fleetsim_emulator_timed_out_connections_total"), "timed out/s"),
    ])
    b.row("Queue, sessions, leases")
    b.panel("timeseries", "Queue depth", "short", [
        q(f"sum(fleetsim_emulator_queued_jobs{{{J}}})", "queued"),
        q(f"sum(fleetsim_emulator_unmatched_jobs{{{J}}})", "unmatched"),
        q(f"sum(fleetsim_emulator_assigned_jobs{{{J}}})", "assigned"),
    ])
    b.panel("timeseries", "Agents, sessions, long polls, leases", "short", [
        q(f"sum(fleetsim_emulator_registered_agents{{{J}}})", "registered agents"),
        q(f"sum(fleetsim_emulator_sessions{{{J}}})", "sessions"),
        q(f"sum(fleetsim_emulator_parked_polls{{{J}}})", "parked polls"),
        q(f"sum(fleetsim_emulator_active_leases{{{J}}})", "renewed leases"),
    ])
    b.panel("timeseries", "Jobs completed and requeued per second", "ops", [
        q(rate("fleetsim_emulator_jobs_completed_total"), "completed"),
        q(rate("fleetsim_emulator_job_requeues_total"), "requeued"),
    ])
    b.panel("timeseries", "Tokens issued and rotated per second", "ops", [
        q(rate("fleetsim_emulator_tokens_issued_total"), "issued"),
        q(rate("fleetsim_emulator_token_rotations_total"), "rotated"),
    ])
    b.row("Crypto (emulator)")
    b.panel("timeseries", "Crypto operations per second", "ops",
            [q(rate("fleetsim_crypto_operations_total", 'side="emulator"', by="op"), "{{op}}")])
    b.panel("timeseries", "Cores busy with crypto", "short",
            [q(rate("fleetsim_crypto_busy_seconds", 'side="emulator"', by="op"), "{{op}}")])
    b.row("Service demand")
    b.panel("timeseries", "Cores busy serving, by route", "short",
            [q(rate("fleetsim_emulator_route_busy_seconds", by="route"), "{{route}}")], w=24,
            description="Decode, core and encode time per route (long-poll holds excluded): "
                        "what fleetsim calibrate turns into each route group's service demand.")
    return b


def capacity_planning():
    b = Board("fleetsim-capacity-planning", "fleetsim · capacity planning", ["capacity"],
              "Whole-run figures for sizing a server, fed by `fleetsim simulate --metrics-addr` "
              "(virtual time; use --metrics-linger so the final values are scraped) or a live "
              "run. Every query reads cumulative values, never wall-clock rates, so virtual-time "
              "runs read right. Pick one run with the job variable.")
    EL = f"max(fleetsim_run_elapsed_seconds{{{J}}})"
    AG = f"sum(fleetsim_agents{{{J}}})"
    b.row("Run")
    b.panel("stat", "Fleet size", "short", [q(AG)], w=6, h=4)
    b.panel("stat", "Run time covered", "s", [q(EL)], w=6, h=4)
    b.panel("stat", "Busy agents / fleet", "percentunit",
            [q(f'sum(fleetsim_agents{{{J},state="busy"}}) / {AG}')], w=6, h=4)
    b.panel("stat", "Peak busy agents", "short",
            [q(f'max_over_time(sum(fleetsim_agents{{{J},state="busy"}})[$__range:])')],
            w=6, h=4)
    b.row("Job pickup over the whole run")
    b.panel("timeseries", "Pickup percentiles (whole run so far)", "s", [
        q(quantile(0.5, PICK, window=False), "p50"),
        q(quantile(0.95, PICK, window=False), "p95"),
        q(quantile(0.99, PICK, window=False), "p99"),
    ])
    b.panel("stat", "Jobs picked up within 30 s", "percentunit", [
        q(f'sum({PICK}_bucket{{{J},le="30"}}) / sum({PICK}_count{{{J}}})')])
    b.panel("stat", "Jobs finished per second of run", "ops", [
        q(f'sum(fleetsim_jobs_total{{{J},event=~"succeeded|failed|canceled"}}) / {EL}')])
    b.row("Server load per agent")
    b.panel("stat", "Calls per agent per minute", "short",
            [q(f"sum({OPS}{{{J}}}) / {AG} / {EL} * 60")],
            description="The load one more agent adds to the server.")
    b.panel("stat", "Error ratio (whole run)", "percentunit",
            [q(zero_if_none(f'sum({OPS}{{{J},outcome!="ok"}})', f"sum({OPS}{{{J}}})")
               + f" / sum({OPS}{{{J}}})")])
    b.panel("bargauge", "p99 latency by operation (whole run)", "s",
            [q(quantile(0.99, LAT, NOT_HELD, by="le, operation", window=False),
               "{{operation}}")], h=10)
    b.panel("timeseries", "Cores busy with crypto, by side", "short",
            [q(f"sum by (side) (fleetsim_crypto_busy_seconds{{{J}}}) / scalar({EL})",
               "{{side}}")], h=10,
            description="Crypto seconds per second of run: the cores crypto needs.")
    return b


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "dashboards")
    fleet_overview().write(os.path.join(root, "fleet-overview.json"))
    emulator_server().write(os.path.join(root, "emulator-server.json"))
    capacity_planning().write(os.path.join(root, "capacity-planning.json"))


if __name__ == "__main__":
    main()
