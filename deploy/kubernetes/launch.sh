#!/usr/bin/env bash
# Launch one distributed fleetsim run on Kubernetes and return its verdict.
#
#   deploy/kubernetes/launch.sh [--shards N] [--image REF] [--margin SECONDS] [--target URL]
#                               [--storage-class NAME] [--access-mode MODE] [--out DIR]
#                               [--render]
#
# In order: applies the lasting part (namespace, report volume, scenario ConfigMap, emulator)
# and waits for the emulator; writes the ConfigMap fleetsim-run with this run's START_AT (now +
# margin), RUN_ID, SHARDS and TARGET; applies the Indexed Job of N shards; waits until that Job
# has ended (complete or failed); applies the merge Job and waits for it; copies merged.json,
# report.html and junit.xml out through a helper pod; exits with the merge's exit code
# (0 pass, 1 thresholds failed, 2 inconsistent or missing shards, 3 I/O). Its own failures
# (no cluster, missing Secret, a wait that timed out) exit 3; bad flags exit 2.
#
# --render prints every manifest the run would apply (with this run's values) and applies
# nothing: review it, or validate it (scripts/ci/kubernetes.sh does). It needs only kubectl's
# built-in kustomize, no cluster.
#
# Needs kubectl (>= 1.27 for backoffLimitPerIndex on the server: beta and on by default from
# 1.29, GA in 1.33) and the Secret fleetsim-pat in namespace fleetsim:
#   kubectl create namespace fleetsim
#   kubectl -n fleetsim create secret generic fleetsim-pat --from-literal=pat="$FLEETSIM_PAT"
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
ns=fleetsim
shards=10
image=localhost/fleetsim:dev
margin_s=90
target=""
storage_class=""
access_mode=""
out=""
render=0
# Bounds of every wait (seconds). The shard Job's own activeDeadlineSeconds (1800) stops hung
# shards; the waits here stop this script if the cluster never reports an end.
emulator_wait_s=300
shards_wait_extra_s=300
merge_wait_s=660
fetch_wait_s=180

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die_usage() { echo "launch.sh: $1" >&2; echo "run with --help for the flags" >&2; exit 2; }
die_run() { echo "launch.sh: $1" >&2; exit 3; }
log() { echo "== $1 ($(date -u +%H:%M:%S))"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards="${2:-}"; shift 2 ;;
    --image) image="${2:-}"; shift 2 ;;
    --margin) margin_s="${2:-}"; shift 2 ;;
    --target) target="${2:-}"; shift 2 ;;
    --storage-class) storage_class="${2:-}"; shift 2 ;;
    --access-mode) access_mode="${2:-}"; shift 2 ;;
    --out) out="${2:-}"; shift 2 ;;
    --render) render=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown flag $1" ;;
  esac
done

# Bounds: the same as fleetsim's own (fleetsim_core::shard::MAX_SHARDS = 1024).
if ! [[ "$shards" =~ ^[0-9]+$ ]] || [ "$shards" -lt 1 ] || [ "$shards" -gt 1024 ]; then
  die_usage "--shards must be a whole number in 1..=1024 (got '$shards')"
fi
if ! [[ "$margin_s" =~ ^[0-9]+$ ]] || [ "$margin_s" -lt 10 ] || [ "$margin_s" -gt 3600 ]; then
  die_usage "--margin must be whole seconds in 10..=3600 (got '$margin_s')"
fi
[ -n "$image" ] || die_usage "--image must name an image, e.g. registry.example/fleetsim:0.1.0"
case "$image" in
  *@*) image_name="${image%@*}"; image_ref=(digest "${image#*@}") ;;
  *:*) image_name="${image%:*}"; image_ref=(newTag "${image##*:}")
       # A colon in a registry's port (host:5000/fleetsim) is not a tag.
       case "${image##*:}" in */*) image_name="$image"; image_ref=(newTag latest) ;; esac ;;
  *) image_name="$image"; image_ref=(newTag latest) ;;
esac
if [ -n "$target" ]; then
  [[ "$target" =~ ^https?://[^[:space:]]+$ ]] \
    || die_usage "--target must be an http:// or https:// URL (got '$target')"
fi
case "$access_mode" in
  ""|ReadWriteMany|ReadWriteOnce|ReadWriteOncePod) ;;
  *) die_usage "--access-mode must be ReadWriteMany, ReadWriteOnce or ReadWriteOncePod" ;;
esac
command -v kubectl >/dev/null 2>&1 || die_run "kubectl is not on PATH"

emulator_url="http://fleetsim-emulator.$ns.svc:8080"
run_target="${target:-$emulator_url}"
now_s="$(date -u +%s)"
start_s=$((now_s + margin_s))
run_id="$(date -u -d "@$now_s" +%Y%m%dT%H%M%SZ)"
out="${out:-fleetsim-out/$run_id}"

work="$(mktemp -d)"
fetch_created=0
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ "$fetch_created" = 1 ]; then
    kubectl -n "$ns" delete pod fleetsim-fetch --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# An overlay of one of the three kustomizations with this run's image (and, for the base, the
# volume's class and mode, and no emulator when --target names another server).
overlay() {
  local base="$1" dir="$work/$2"
  mkdir -p "$dir"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    # kustomize refuses absolute paths: name the base relative to the overlay.
    echo "  - $(realpath --relative-to="$dir" "$base")"
    echo "images:"
    echo "  - name: localhost/fleetsim"
    echo "    newName: $image_name"
    echo "    ${image_ref[0]}: \"${image_ref[1]}\""
    echo "patches:"
    case "$2" in
      base)
        if [ -n "$storage_class" ]; then
          printf '  - target: {kind: PersistentVolumeClaim, name: fleetsim-reports}\n'
          printf '    patch: |-\n      - op: add\n        path: /spec/storageClassName\n'
          printf '        value: "%s"\n' "$storage_class"
        fi
        if [ -n "$access_mode" ]; then
          printf '  - target: {kind: PersistentVolumeClaim, name: fleetsim-reports}\n'
          printf '    patch: |-\n      - op: replace\n        path: /spec/accessModes\n'
          printf '        value: ["%s"]\n' "$access_mode"
        fi
        if [ -n "$target" ]; then
          # `$patch: delete` is kustomize's literal strategic-merge directive.
          # shellcheck disable=SC2016
          printf '  - patch: |-\n      $patch: delete\n      apiVersion: apps/v1\n'
          printf '      kind: Deployment\n      metadata: {name: fleetsim-emulator}\n'
          # shellcheck disable=SC2016
          printf '  - patch: |-\n      $patch: delete\n      apiVersion: v1\n'
          printf '      kind: Service\n      metadata: {name: fleetsim-emulator}\n'
        fi
        ;;
      shards)
        printf '  - target: {kind: Job, name: fleetsim-shards}\n'
        printf '    patch: |-\n'
        printf '      - op: replace\n        path: /spec/completions\n        value: %s\n' "$shards"
        printf '      - op: replace\n        path: /spec/parallelism\n        value: %s\n' "$shards"
        ;;
    esac
  } >"$dir/kustomization.yaml"
  # Drop a `patches:` key left without entries (kustomize rejects a null list).
  if [ "$(tail -n1 "$dir/kustomization.yaml")" = "patches:" ]; then
    sed -i '$d' "$dir/kustomization.yaml"
  fi
  kubectl kustomize "$dir"
}

run_configmap() {
  kubectl create configmap fleetsim-run --namespace "$ns" --dry-run=client -o yaml \
    --from-literal=START_AT="$(date -u -d "@$start_s" +%Y-%m-%dT%H:%M:%SZ)" \
    --from-literal=RUN_ID="$run_id" \
    --from-literal=SHARDS="$shards" \
    --from-literal=TARGET="$run_target"
}

if [ "$render" = 1 ]; then
  overlay "$here" base
  echo "---"
  run_configmap
  echo "---"
  overlay "$here/shards" shards
  echo "---"
  overlay "$here/merge" merge
  exit 0
fi

# The first condition of `job` that is True among Complete and Failed, or nothing yet.
job_end() {
  kubectl -n "$ns" get job "$1" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{"\n"}{end}' \
    | grep -x -m1 -E 'Complete|Failed' || true
}
# Wait (bounded) until `job` has ended; prints Complete or Failed.
wait_job_end() {
  local job="$1" limit_s="$2" waited=0 end=""
  while [ -z "$end" ]; do
    [ "$waited" -le "$limit_s" ] || die_run "job/$job has not ended after ${limit_s}s"
    sleep 5
    waited=$((waited + 5))
    end="$(job_end "$job")"
  done
  echo "$end"
}

log "cluster: $(kubectl config current-context 2>/dev/null || echo '(no context)')"
kubectl version >/dev/null 2>&1 || die_run "kubectl cannot reach a cluster (kubectl version failed)"

log "apply the lasting part: namespace, report volume, scenario, emulator"
overlay "$here" base >"$work/base.yaml"
kubectl apply -f "$work/base.yaml"
kubectl -n "$ns" get secret fleetsim-pat >/dev/null 2>&1 || die_run "no Secret fleetsim-pat in \
namespace $ns: kubectl -n $ns create secret generic fleetsim-pat --from-literal=pat=\"\$FLEETSIM_PAT\""
if [ -z "$target" ]; then
  kubectl -n "$ns" rollout status deployment/fleetsim-emulator --timeout="${emulator_wait_s}s" \
    || die_run "the emulator did not become ready in ${emulator_wait_s}s (kubectl -n $ns describe pod -l app.kubernetes.io/component=emulator)"
fi

log "replace the previous run's Jobs"
kubectl -n "$ns" delete job fleetsim-shards fleetsim-merge --ignore-not-found --wait=true
kubectl -n "$ns" delete pod fleetsim-fetch --ignore-not-found --wait=true

# START_AT counts from now, after the emulator is ready: the margin covers scheduling, image
# pulls and key generation in the shard pods. A pod ready later starts at once, its clock still
# anchored at START_AT, and its report says how late it was.
now_s="$(date -u +%s)"
start_s=$((now_s + margin_s))
log "run $run_id: $shards shards against $run_target, start at $(date -u -d "@$start_s" +%H:%M:%S)"
run_configmap | kubectl apply -f -
overlay "$here/shards" shards >"$work/shards.yaml"
kubectl apply -f "$work/shards.yaml"

shards_wait_s=$((margin_s + 1800 + shards_wait_extra_s))
shards_end="$(wait_job_end fleetsim-shards "$shards_wait_s")"
log "shards ended: $shards_end ($(kubectl -n "$ns" get job fleetsim-shards \
  -o jsonpath='succeeded {.status.succeeded}, failed {.status.failed}, failed indexes [{.status.failedIndexes}]'))"

# The merge runs whether or not every shard succeeded: it judges what was written, and names
# any shard whose report is missing (exit 2).
log "merge"
overlay "$here/merge" merge >"$work/merge.yaml"
kubectl apply -f "$work/merge.yaml"
fetch_created=1
wait_job_end fleetsim-merge "$merge_wait_s" >/dev/null
kubectl -n "$ns" logs job/fleetsim-merge || true
merge_rc="$(kubectl -n "$ns" get pods -l job-name=fleetsim-merge \
  -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.exitCode}')"
[[ "$merge_rc" =~ ^[0-9]+$ ]] || die_run "could not read the merge container's exit code"
if [ "$merge_rc" -gt 3 ]; then
  # Not fleetsim's code: the container was killed (137 = OOM or the Job's deadline).
  echo "launch.sh: the merge container ended with $merge_rc (killed?): kubectl -n $ns describe job fleetsim-merge" >&2
  merge_rc=3
fi

log "copy the reports to $out"
mkdir -p "$out"
kubectl -n "$ns" wait --for=condition=Ready pod/fleetsim-fetch --timeout="${fetch_wait_s}s" \
  || die_run "the fetch pod did not become ready; the reports are on the volume under /reports/$run_id"
for f in merged.json report.html junit.xml; do
  if kubectl -n "$ns" exec fleetsim-fetch -- /usr/bin/test -f "/reports/$run_id/$f"; then
    kubectl -n "$ns" cp "fleetsim-fetch:/reports/$run_id/$f" "$out/$f" >/dev/null
    echo "  $out/$f"
  fi
done

log "done: merge exit code $merge_rc"
exit "$merge_rc"
