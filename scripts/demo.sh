#!/usr/bin/env bash
# Set up (scripts/setup.sh), then the main job: a three-node lab on this machine
# (`skiff lab up`: a network namespace and a dockerd per node, the control plane, one
# node agent per node), and a demo app: a Deployment of 3 HTTP pods spread over the
# nodes behind a Service `web` (ClusterIP + NodePort), reached by name from a pod, by its
# ClusterIP, and through the NodePort at every node's address.
#
#   scripts/demo.sh          # bring the lab up, run the demo, leave the lab running
#   scripts/demo.sh --down   # ... and take the lab down at the end
#
# SKIFF_DEMO_LAB names the lab (default "demo"); `skiff lab down --name demo` removes it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DOWN=0
[[ ${1:-} == "--down" ]] && DOWN=1
LAB="${SKIFF_DEMO_LAB:-demo}"

"$ROOT/scripts/setup.sh"

BIN="$ROOT/.venv/bin"
log() { printf '[demo] %s\n' "$*" >&2; }

log "skiff lab up --name $LAB --nodes 3"
"$BIN/skiff" lab up --name "$LAB" --nodes 3
KUBECONFIG="$("$BIN/skiff" lab kubeconfig --name "$LAB")"
export KUBECONFIG
CACHE="$(mktemp -d)"
kubectl() { "$ROOT/.tools/kubectl-1.35" --cache-dir "$CACHE" "$@"; }
on_exit() {
    rm -rf "$CACHE"
    if [[ $DOWN -eq 1 ]]; then
        "$BIN/skiff" lab down --name "$LAB"
    fi
}
trap on_exit EXIT

kubectl get nodes -o wide

log "the demo app: Deployment web (3 replicas, busybox httpd on :8080) behind Service web"
kubectl apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: skiff/app:1.0
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -v -p 8080 -h /www"]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - name: client
    image: skiff/app:1.0
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 86400 & wait"]
EOF

log "waiting for the rollout and the client"
kubectl rollout status deployment/web --timeout=180s
kubectl wait --for=condition=Ready pod/client --timeout=120s
kubectl get pods -o wide
kubectl get service web

log "from the client pod, by name (cluster DNS) through the Service, six requests:"
kubectl exec client -- sh -c 'for i in 1 2 3 4 5 6; do wget -qO- http://web.default.svc.cluster.local/; done'

CLUSTER_IP=$(kubectl get service web -o jsonpath='{.spec.clusterIP}')
NODE_PORT=$(kubectl get service web -o jsonpath='{.spec.ports[0].nodePort}')
log "from the client pod, by ClusterIP $CLUSTER_IP:"
kubectl exec client -- wget -qO- "http://$CLUSTER_IP/"
for ip in $(kubectl get nodes -o jsonpath='{.items[*].status.addresses[?(@.type=="InternalIP")].address}'); do
    log "from this host, through the NodePort at node address $ip:$NODE_PORT:"
    timeout 10 busybox wget -qO- "http://$ip:$NODE_PORT/"
done

if [[ $DOWN -eq 0 ]]; then
    log "the lab stays up: export KUBECONFIG=$KUBECONFIG; remove it with: $BIN/skiff lab down --name $LAB"
fi
