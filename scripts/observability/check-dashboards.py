#!/usr/bin/env python3
"""Check fleetsim's Grafana dashboards offline and against a live Prometheus.

    check-dashboards.py schema [DASHBOARD_DIR]            # JSON Schema (Grafana's, draft-07)
    check-dashboards.py queries PROM_URL [DASHBOARD_DIR] [DEADLINE_S]
    check-dashboards.py shards PROM_URL DASHBOARD_DIR REPORT.json...

`schema` validates every dashboards/*.json against ../shared/schemas' copy of Grafana's
dashboard JSON Schema (path from FLEETSIM_DASHBOARD_SCHEMA, default
dashboards/schema/grafana-dashboard.jsonschema.json).

`queries` takes every panel target and template-variable query, replaces Grafana macros and
variables (`$__rate_interval` -> 15s, `$__range` -> 5m, `$var` -> `.*`), asks Prometheus to
parse it (`/api/v1/format_query`, the real parser) and to run it (`/api/v1/query`): every
query must parse and return a non-empty result. Queries are retried until the deadline, since
rates need two scrapes; the ones still failing are listed. A result that still carries a
`shard` label fails too: every panel sums the shards into the whole fleet.

`shards` runs after `fleetsim run --shard I/N` processes have ended (their endpoints lingering)
and been scraped: it takes their reports (`--out`), waits until Prometheus has scraped every
fleet endpoint after the last report was written (the counters are final then), and checks
that the panels read the fleet totals exactly: with the `shard` variable on All, the sums of
the reports; with it on one shard, that shard's report. Per shard selection it runs every
fleet-overview panel query (each must return data without a `shard` label) and compares
"Agents by state" and the capacity dashboard's "Fleet size" with the reports' agents by state,
"Fleet processes scraped" with the number of reports selected,
and the whole-run reading of "Calls per second by operation", "Failed calls per second by
outcome" and "Jobs per second by event" (their rate() replaced by the counter itself) with the
reports' operation counts, error count and job counts. Exit 1 on any mismatch.
"""
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def dashboards(directory):
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            path = os.path.join(directory, name)
            with open(path) as f:
                yield path, json.load(f)


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def expressions(dash):
    """(where, expr) for every PromQL expression of a dashboard."""
    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                yield f'panel "{p.get("title")}" {t.get("refId")}', t["expr"]
    for v in dash.get("templating", {}).get("list", []):
        query = v.get("query")
        if v.get("type") == "query" and isinstance(query, str):
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
            yield f'variable "{v["name"]}"', m.group(1) if m else query


def substitute(expr, values=None):
    """Grafana's macros and variables replaced: `values` maps a variable name to the regex it
    holds (a `=~` matcher); every other variable matches anything."""
    values = values or {}
    expr = expr.replace("$__rate_interval", "15s").replace("$__interval", "5s")
    expr = expr.replace("$__range", "5m")

    def var(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return values.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", var, expr)


def check_schema(directory):
    import jsonschema

    schema_path = os.environ.get(
        "FLEETSIM_DASHBOARD_SCHEMA",
        os.path.join(ROOT, "dashboards", "schema", "grafana-dashboard.jsonschema.json"))
    with open(schema_path) as f:
        validator = jsonschema.Draft7Validator(json.load(f))
    failed = 0
    for path, dash in dashboards(directory):
        errors = list(validator.iter_errors(dash))
        for e in errors:
            best = jsonschema.exceptions.best_match([e])
            print(f"{path}: {'/'.join(map(str, e.path))}: {best.message}")
        failed += len(errors)
        print(f"{'ok  ' if not errors else 'FAIL'} schema {path}")
    return failed == 0


def api(prom, path, expr):
    url = f"{prom}{path}?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def check_queries(prom, directory, deadline_s):
    pending = []
    for path, dash in dashboards(directory):
        for where, expr in expressions(dash):
            pending.append((os.path.basename(path), where, substitute(expr)))
    problems = {}
    checked = len(pending)
    for name, where, expr in pending:
        parsed = api(prom, "/api/v1/format_query", expr)
        if parsed.get("status") != "success":
            problems[(name, where)] = f"does not parse: {parsed.get('error')}: {expr}"
    pending = [p for p in pending if (p[0], p[1]) not in problems]
    deadline = time.monotonic() + deadline_s
    while True:
        still = []
        for name, where, expr in pending:
            answer = api(prom, "/api/v1/query", expr)
            result = answer.get("data", {}).get("result")
            if answer.get("status") != "success" or not result:
                still.append((name, where, expr))
            elif where.startswith("panel") and keeps_shard(answer):
                problems[(name, where)] = f"keeps the shard label (sum it away): {expr}"
        pending = still
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    for name, where, expr in pending:
        problems[(name, where)] = f"NO DATA: {expr}"
    for (name, where), why in sorted(problems.items()):
        print(f"FAIL {name} {where}: {why}")
    total = sum(1 for _ in problems)
    print(f"{'ok  ' if not total else 'FAIL'} queries: {checked} checked, {total} failing")
    return total == 0


def keeps_shard(answer):
    """Whether a query's result still has series per shard (not summed over `shard`)."""
    data = answer.get("data", {})
    return data.get("resultType") == "vector" and any(
        "shard" in r.get("metric", {}) for r in data.get("result", []))


def instant(prom, expr):
    """An instant query's result as {labels-tuple: value}; raises on an error."""
    answer = api(prom, "/api/v1/query", expr)
    if answer.get("status") != "success":
        raise RuntimeError(f"{answer.get('error')}: {expr}")
    if keeps_shard(answer):
        raise RuntimeError(f"keeps the shard label (sum it away): {expr}")
    out = {}
    for r in answer["data"]["result"]:
        labels = tuple(sorted(r["metric"].items()))
        out[labels] = float(r["value"][1])
    return out


def by_label(result, label):
    return {dict(k).get(label, ""): v for k, v in result.items()}


def whole_run(expr):
    """A rate panel read over the whole run: each `rate(counter{...}[window])` becomes the
    counter itself, so the panel's selectors and aggregation give the run's totals."""
    return re.sub(r"rate\((fleetsim_\w+\{[^}]*\})\[\$__rate_interval\]\)", r"\1", expr)


def panel_exprs(dash, title):
    for p in panels(dash.get("panels", [])):
        if p.get("title") == title:
            return [t["expr"] for t in p.get("targets", [])]
    raise KeyError(f'no panel "{title}" in {dash.get("uid")}')


def load_reports(paths):
    """{shard index: report} and the shard count; exits on duplicates, gaps or mixed counts."""
    reports, counts = {}, set()
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        s = r.get("run", {}).get("shard") or {"index": 0, "count": 1}
        if s["index"] in reports:
            sys.exit(f"{path}: shard {s['index']} given twice")
        reports[s["index"]] = r
        counts.add(s["count"])
    if len(counts) != 1 or sorted(reports) != list(range(counts.copy().pop())):
        sys.exit(f"reports are not shards 0..N-1 of one run: indices {sorted(reports)}, "
                 f"counts {sorted(counts)}")
    return reports, counts.pop()


def expected_totals(reports):
    """What the panels must read for these reports: agents by state, calls by operation, the
    error count, jobs by the exporter's event label (it counts abandoned jobs as failed)."""
    agents, ops, jobs, errors = {}, {}, {}, 0
    for r in reports:
        for state, n in r["agents"]["by_state"].items():
            agents[state] = agents.get(state, 0) + n
        for op, o in r["operations"].items():
            ops[op] = ops.get(op, 0) + o["count"]
        errors += r["errors"]["count"]
        j = r["jobs"]
        for event, n in [("queued", j["queued"]), ("started", j["started"]),
                         ("succeeded", j["succeeded"]), ("failed", j["failed"] + j["abandoned"]),
                         ("canceled", j["canceled"])]:
            jobs[event] = jobs.get(event, 0) + n
    return agents, ops, errors, jobs


def wait_final_scrape(prom, count, written, deadline_s):
    """Wait until every fleet endpoint was scraped after `written` (Unix seconds)."""
    expr = f'count(timestamp(fleetsim_build_info{{role="fleet"}}) > {written:.3f})'
    deadline = time.monotonic() + deadline_s
    while True:
        got = sum(instant(prom, expr).values())
        if got >= count:
            return True
        if time.monotonic() > deadline:
            print(f"FAIL only {got:.0f} of {count} fleet endpoints scraped after the reports")
            return False
        time.sleep(0.5)


def check_shards(prom, directory, paths, deadline_s=30.0):
    reports, count = load_reports(paths)
    written = max(os.path.getmtime(p) for p in paths)
    if not wait_final_scrape(prom, count, written, deadline_s):
        return False
    with open(os.path.join(directory, "fleet-overview.json")) as f:
        fleet = json.load(f)
    with open(os.path.join(directory, "capacity-planning.json")) as f:
        capacity = json.load(f)
    failures = 0

    def compare(what, got, want):
        nonlocal failures
        # Counters and gauges hold whole numbers; read at the end they must match exactly.
        got = {k: round(v) for k, v in got.items() if v or k in want}
        want = {k: v for k, v in want.items() if v or k in got}
        ok = got == want
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {'' if ok else f'Prometheus {got} != reports '}{want}")

    selections = [("all shards", ".*", list(reports.values()))]
    selections += [(f"shard {i}", str(i), [reports[i]]) for i in sorted(reports)]
    for name, value, chosen in selections:
        sub = lambda e: substitute(e, {"shard": value})
        agents, ops, errors, jobs = expected_totals(chosen)
        for where, expr in expressions(fleet):
            if not where.startswith("panel"):
                continue
            try:
                if not instant(prom, sub(expr)):
                    print(f"FAIL {name}: fleet-overview {where} returns no data")
                    failures += 1
            except RuntimeError as e:
                print(f"FAIL {name}: fleet-overview {where}: {e}")
                failures += 1
        [states] = panel_exprs(fleet, "Agents by state")
        compare(f"{name}: Agents by state", by_label(instant(prom, sub(states)), "state"), agents)
        [size] = panel_exprs(capacity, "Fleet size")
        compare(f"{name}: Fleet size", {"agents": sum(instant(prom, sub(size)).values())},
                {"agents": sum(agents.values())})
        [calls] = panel_exprs(fleet, "Calls per second by operation")
        compare(f"{name}: calls by operation (whole run)",
                by_label(instant(prom, sub(whole_run(calls))), "operation"), ops)
        [failed] = panel_exprs(fleet, "Failed calls per second by outcome")
        compare(f"{name}: failed calls (whole run)",
                {"errors": sum(instant(prom, sub(whole_run(failed))).values())},
                {"errors": errors})
        [scraped] = panel_exprs(fleet, "Fleet processes scraped")
        compare(f"{name}: Fleet processes scraped",
                {"processes": sum(instant(prom, sub(scraped)).values())},
                {"processes": len(chosen)})
        [events] = panel_exprs(fleet, "Jobs per second by event")
        compare(f"{name}: jobs by event (whole run)",
                by_label(instant(prom, sub(whole_run(events))), "event"), jobs)
    print(f"{'ok  ' if not failures else 'FAIL'} shards: {count} reports, "
          f"{failures} mismatches")
    return failures == 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "schema":
        directory = argv[2] if len(argv) > 2 else os.path.join(ROOT, "dashboards")
        return 0 if check_schema(directory) else 1
    if len(argv) >= 3 and argv[1] == "queries":
        directory = argv[3] if len(argv) > 3 else os.path.join(ROOT, "dashboards")
        deadline = float(argv[4]) if len(argv) > 4 else 60.0
        return 0 if check_queries(argv[2].rstrip("/"), directory, deadline) else 1
    if len(argv) >= 5 and argv[1] == "shards":
        return 0 if check_shards(argv[2].rstrip("/"), argv[3], argv[4:]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
