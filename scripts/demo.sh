#!/usr/bin/env bash
# Set up (scripts/setup.sh), then the main job: a three-node lab on this machine
# (`skiff lab up`: a network namespace and a dockerd per node, the control plane, one
# node agent per node), and a demo pod on each node serving HTTP, shown Running with
# its pod IP and answering through `kubectl exec` and `kubectl logs`.
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

log "a demo pod on each node (busybox httpd on :8080, readiness probe on /)"
nodes=$(kubectl get nodes -o jsonpath='{.items[*].metadata.name}')
i=0
for node in $nodes; do
    i=$((i + 1))
    kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: demo-$i
  labels: {app: demo}
spec:
  nodeName: $node
  containers:
  - name: web
    image: skiff/app:1.0
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hello from \$(hostname) on $node > /var/www/index.html; exec httpd -f -v -p 8080 -h /var/www"]
    ports: [{containerPort: 8080, name: http}]
    readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 2}
EOF
done

log "waiting for the demo pods to be Ready"
kubectl wait --for=condition=Ready pod -l app=demo --timeout=120s
kubectl get pods -o wide

for n in $(seq 1 "$i"); do
    log "demo-$n answers on its pod IP (from inside the pod):"
    kubectl exec "demo-$n" -- sh -c 'wget -qO- http://$(hostname -i):8080/'
done
log "kubectl logs demo-1:"
kubectl logs demo-1 --tail 5

if [[ $DOWN -eq 0 ]]; then
    log "the lab stays up: export KUBECONFIG=$KUBECONFIG; remove it with: $BIN/skiff lab down --name $LAB"
fi
