#!/usr/bin/env python3
"""Check fleetsim's Grafana dashboards offline and against a live Prometheus.

    check-dashboards.py schema [DASHBOARD_DIR]            # JSON Schema (Grafana's, draft-07)
    check-dashboards.py queries PROM_URL [DASHBOARD_DIR] [DEADLINE_S]

`schema` validates every dashboards/*.json against ../shared/schemas' copy of Grafana's
dashboard JSON Schema (path from FLEETSIM_DASHBOARD_SCHEMA, default
dashboards/schema/grafana-dashboard.jsonschema.json).

`queries` takes every panel target and template-variable query, replaces Grafana macros and
variables (`$__rate_interval` -> 15s, `$__range` -> 5m, `$var` -> `.*`), asks Prometheus to
parse it (`/api/v1/format_query`, the real parser) and to run it (`/api/v1/query`): every
query must parse and return a non-empty result. Queries are retried until the deadline, since
rates need two scrapes; the ones still failing are listed. Exit 1 on any failure.
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


def substitute(expr):
    expr = expr.replace("$__rate_interval", "15s").replace("$__interval", "5s")
    expr = expr.replace("$__range", "5m")
    return re.sub(r"\$\{?\w+(:\w+)?\}?|\[\[\w+\]\]", ".*", expr)


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


def main(argv):
    if len(argv) >= 2 and argv[1] == "schema":
        directory = argv[2] if len(argv) > 2 else os.path.join(ROOT, "dashboards")
        return 0 if check_schema(directory) else 1
    if len(argv) >= 3 and argv[1] == "queries":
        directory = argv[3] if len(argv) > 3 else os.path.join(ROOT, "dashboards")
        deadline = float(argv[4]) if len(argv) > 4 else 60.0
        return 0 if check_queries(argv[2].rstrip("/"), directory, deadline) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
