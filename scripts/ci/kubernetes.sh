#!/usr/bin/env bash
# The Kubernetes check (.ci/run calls it): no cluster runs here, so everything is checked
# offline.
#
#   scripts/ci/kubernetes.sh
#
# 1. deploy/kubernetes/launch.sh and this script: `bash -n` and shellcheck.
# 2. Containerfile: at least two stages, a non-root numeric USER, no remote ADD, the binary
#    installed at the path every manifest's command runs.
# 3. The manifests as they are applied: `kubectl kustomize` of the three kustomizations and
#    `launch.sh --render` (this run's ConfigMap, shard count and image patched in) when kubectl
#    exists; otherwise each YAML file on its own (the generated scenario ConfigMap is then not
#    checked; the script says which ran). Every object is validated strictly (unknown fields
#    fail) against the Kubernetes 1.31 schemas of kubernetes-validate (pinned).
# 4. What a schema cannot see: the shard Job is Indexed with completions = parallelism and no
#    retries; its args and the merge Job's use only flags `fleetsim run --help` /
#    `fleetsim merge --help` / `fleetsim serve --help` list; every $(VAR) they use is defined;
#    every container runs as non-root with a read-only root, no privilege escalation, no
#    capabilities and the RuntimeDefault seccomp profile; the emulator and shard pods carry the
#    Prometheus scrape annotations; the ConfigMap's scenario passes `fleetsim validate`.
#
# Uses target/debug/fleetsim (or $CARGO_TARGET_DIR), building it when absent. Installs
# kubernetes-validate (pip, pinned) and shellcheck (Debian package, as root) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
k8s_version=1.31.0
kv_pin="kubernetes-validate==1.31.0"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== tools"
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("kubernetes-validate") != "1.31.0")' 2>/dev/null; then
  python3 -m pip install --quiet --root-user-action=ignore "$kv_pin"
fi
if ! command -v shellcheck >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck
fi
fleetsim="${CARGO_TARGET_DIR:-$root/target}/debug/fleetsim"
if [ ! -x "$fleetsim" ]; then
  cargo build -q -p fleetsim
fi
"$fleetsim" --version

echo "== shell scripts: bash -n and shellcheck"
scripts=(deploy/kubernetes/launch.sh scripts/ci/kubernetes.sh)
for s in "${scripts[@]}"; do bash -n "$s"; done
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck "${scripts[@]}"
  echo "shellcheck: clean"
elif [ -n "${CI:-}" ]; then
  echo "shellcheck is missing and could not be installed (not root?)" >&2
  exit 1
else
  echo "shellcheck not installed: skipped (CI installs it)"
fi
# launch.sh refuses bad flags with exit 2 before touching a cluster.
for bad in "--shards 0" "--shards 1025" "--margin 5" "--target ftp://x" "--access-mode RWX" "--bogus"; do
  rc=0
  # shellcheck disable=SC2086 # the flag pairs are meant to split
  deploy/kubernetes/launch.sh --render $bad >/dev/null 2>&1 || rc=$?
  [ "$rc" = 2 ] || { echo "launch.sh $bad: exit $rc, expected 2" >&2; exit 1; }
done
echo "launch.sh: bad flags refused (exit 2)"

echo "== render the manifests"
manifests=()
if command -v kubectl >/dev/null 2>&1; then
  echo "kubectl $(kubectl version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'): kustomize renders"
  kubectl kustomize deploy/kubernetes >"$work/base.yaml"
  kubectl kustomize deploy/kubernetes/shards >"$work/shards.yaml"
  kubectl kustomize deploy/kubernetes/merge >"$work/merge.yaml"
  # What launch.sh applies: 3 shards, an image by tag; and against another target (no emulator).
  deploy/kubernetes/launch.sh --render --shards 3 --image registry.example:5000/fleetsim:ci \
    >"$work/launch.yaml"
  deploy/kubernetes/launch.sh --render --target https://dev.azure.com/example \
    --storage-class nfs-client --access-mode ReadWriteOnce >"$work/launch-target.yaml"
  manifests=("$work"/base.yaml "$work"/shards.yaml "$work"/merge.yaml "$work"/launch.yaml \
    "$work"/launch-target.yaml deploy/kubernetes/pat-secret.example.yaml)
  mode=rendered
else
  echo "no kubectl: validating each manifest file on its own (the generated ConfigMaps and the"
  echo "image and namespace transforms are NOT checked)"
  while IFS= read -r f; do manifests+=("$f"); done < <(find deploy/kubernetes -name '*.yaml' \
    ! -name kustomization.yaml | sort)
  mode=files
fi

echo "== Kubernetes $k8s_version schemas, strict ($mode)"
python3 -m kubernetes_validate --strict --kubernetes-version "$k8s_version" --quiet \
  "${manifests[@]}"
echo "valid: ${#manifests[@]} files"

echo "== what the schemas cannot see"
"$fleetsim" run --help >"$work/run.help"
"$fleetsim" merge --help >"$work/merge.help"
"$fleetsim" serve --help >"$work/serve.help"
python3 - "$mode" "$fleetsim" "$work" "${manifests[@]}" <<'PY'
import os, re, shlex, subprocess, sys, yaml

mode, fleetsim, work, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
problems = []
def problem(msg):
    problems.append(msg)

docs = []
for f in files:
    with open(f) as fh:
        for d in yaml.safe_load_all(fh):
            if d:
                docs.append((f, d))

# --- Containerfile -------------------------------------------------------------------------
cf = open("Containerfile").read().splitlines()
instr = [l.strip() for l in cf if l.strip() and not l.lstrip().startswith("#")]
stages = [l for l in instr if l.upper().startswith("FROM ")]
if len(stages) < 2:
    problem(f"Containerfile: {len(stages)} stage(s); a builder and a runtime stage expected")
users = [l.split(None, 1)[1] for l in instr if l.upper().startswith("USER ")]
if not users:
    problem("Containerfile: no USER (the image would run as root)")
else:
    uid = users[-1].split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        problem(f"Containerfile: final USER {users[-1]!r} must be a numeric non-root uid "
                "(runAsNonRoot can only verify numeric users)")
for l in instr:
    if re.match(r"(?i)^ADD\s+.*https?://", l):
        problem(f"Containerfile: remote ADD ({l!r}); fetch in a RUN with a checksum instead")
entry = [l for l in instr if l.upper().startswith("ENTRYPOINT")]
m = re.search(r'\["([^"]+)"', entry[-1]) if entry else None
binary = m.group(1) if m else None
if not binary:
    problem("Containerfile: no exec-form ENTRYPOINT naming the binary")
elif not any(l.upper().startswith("COPY") and l.split()[-1] == binary for l in instr):
    problem(f"Containerfile: the ENTRYPOINT {binary} is not where a COPY puts the binary")

# --- flags each subcommand knows -------------------------------------------------------------
def flags(sub):
    text = open(os.path.join(work, f"{sub}.help")).read()
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text)) | {"--help"}
known = {s: flags(s) for s in ("run", "merge", "serve")}

def check_invocation(where, argv):
    """argv after the binary: SUBCOMMAND [args...]; every --flag must be one it knows."""
    if not argv:
        problem(f"{where}: no subcommand")
        return
    sub = argv[0]
    if sub not in known:
        problem(f"{where}: subcommand {sub!r} is not checked here (run, merge, serve)")
        return
    for a in argv[1:]:
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            if flag not in known[sub]:
                problem(f"{where}: `fleetsim {sub}` has no flag {flag} (fleetsim {sub} --help)")

# --- pods ---------------------------------------------------------------------------------------
def pod_specs():
    for f, d in docs:
        kind = d.get("kind")
        name = d.get("metadata", {}).get("name")
        if kind == "Pod":
            yield f, kind, name, d.get("metadata", {}), d["spec"], False
        elif kind in ("Job", "Deployment"):
            t = d["spec"]["template"]
            indexed = d["spec"].get("completionMode") == "Indexed"
            yield f, kind, name, t.get("metadata", {}), t["spec"], indexed

seen = set()
for f, kind, name, meta, spec, indexed in pod_specs():
    where = f"{os.path.basename(f)}: {kind}/{name}"
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) == 0:
        problem(f"{where}: pod securityContext needs runAsNonRoot: true and a non-zero runAsUser")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(f"{where}: pod seccompProfile must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        problem(f"{where}: automountServiceAccountToken must be false (no pod talks to the API)")
    comp = meta.get("labels", {}).get("app.kubernetes.io/component")
    if comp in ("emulator", "shards"):
        ann = meta.get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != "9464":
            problem(f"{where}: Prometheus annotations (scrape \"true\", port \"9464\") missing")
    for c in spec.get("initContainers", []) + spec["containers"]:
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True \
                or sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problem(f"{cw}: needs allowPrivilegeEscalation false, readOnlyRootFilesystem true, drop ALL")
        if "limits" not in c.get("resources", {}) or "requests" not in c.get("resources", {}):
            problem(f"{cw}: resources need requests and limits")
        cmd = c.get("command", [])
        defined = {e["name"] for e in c.get("env", [])}
        if indexed:
            defined.add("JOB_COMPLETION_INDEX")  # Kubernetes sets it in every Indexed Job pod
        args = c.get("args", [])
        for v in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(cmd + args)):
            if v not in defined:
                problem(f"{cw}: $({v}) is not in the container's env (Kubernetes would pass it literally)")
        if cmd[:1] == [binary]:
            check_invocation(cw, args)
            seen.add(args[0] if args else "")
        elif cmd[:2] == ["/bin/sh", "-c"]:
            script = " ".join(args)
            words = shlex.split(script)
            if binary not in words:
                problem(f"{cw}: the shell script does not run {binary}")
            else:
                i = words.index(binary)
                check_invocation(cw, words[i + 1:])
                seen.add(words[i + 1] if len(words) > i + 1 else "")
        elif cmd and cmd[0].startswith("/usr/local/bin/") and cmd[0] != binary:
            problem(f"{cw}: command {cmd[0]} is not the image's binary {binary}")

if mode == "rendered":
    for sub in ("run", "merge", "serve"):
        if sub not in seen:
            problem(f"no container runs `fleetsim {sub}`")

# --- the shard Job ----------------------------------------------------------------------------
for f, d in docs:
    if d.get("kind") == "Job" and d["metadata"]["name"] == "fleetsim-shards":
        s = d["spec"]
        where = f"{os.path.basename(f)}: Job/fleetsim-shards"
        if s.get("completionMode") != "Indexed":
            problem(f"{where}: completionMode must be Indexed (JOB_COMPLETION_INDEX is the shard)")
        if s.get("completions") != s.get("parallelism"):
            problem(f"{where}: completions {s.get('completions')} != parallelism "
                    f"{s.get('parallelism')}: shards must all run at once")
        if s.get("backoffLimitPerIndex") != 0:
            problem(f"{where}: backoffLimitPerIndex must be 0 (a retried shard would run late)")
        if s["template"]["spec"].get("restartPolicy") != "Never":
            problem(f"{where}: restartPolicy must be Never")
        args = s["template"]["spec"]["containers"][0]["args"]
        for flag in ("--shard", "--start-at", "--out", "--metrics-addr"):
            if flag not in args:
                problem(f"{where}: shard args lack {flag}")
        if "--shard" in args and args[args.index("--shard") + 1] != "$(JOB_COMPLETION_INDEX)/$(SHARDS)":
            problem(f"{where}: --shard must be $(JOB_COMPLETION_INDEX)/$(SHARDS)")

# --- the scenario ConfigMap -------------------------------------------------------------------
scenario = open("deploy/kubernetes/scenario.toml").read()
cms = [d for _, d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "fleetsim-scenario"]
if mode == "rendered":
    if not cms:
        problem("no ConfigMap fleetsim-scenario in the rendered manifests")
    for cm in cms:
        if cm.get("data", {}).get("scenario.toml") != scenario:
            problem("ConfigMap fleetsim-scenario does not hold deploy/kubernetes/scenario.toml")
r = subprocess.run([fleetsim, "validate", "deploy/kubernetes/scenario.toml"],
                   capture_output=True, text=True)
if r.returncode != 0:
    problem(f"fleetsim validate deploy/kubernetes/scenario.toml: exit {r.returncode}\n{r.stdout}{r.stderr}")
else:
    print("fleetsim validate deploy/kubernetes/scenario.toml: ok")

if problems:
    print(f"{len(problems)} problem(s):", file=sys.stderr)
    for p in problems:
        print(f"  - {p}", file=sys.stderr)
    sys.exit(1)
print("manifests, Containerfile and flags: ok")
PY
echo "== kubernetes: ok"
