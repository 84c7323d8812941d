#!/usr/bin/env bash
# Set up (scripts/setup.sh), then the main job: start `skiff server` on a free port
# with a fresh data dir, wait until it is ready, list its namespaces with `skiff` and
# with the real kubectl 1.35, and stop it again.
#
#   scripts/demo.sh          # run and clean up
#   scripts/demo.sh --keep   # leave the server running and print how to reach it
#
# SKIFF_DEMO_DIR picks the data dir (default: a new temp dir).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

KEEP=0
[[ ${1:-} == "--keep" ]] && KEEP=1

"$ROOT/scripts/setup.sh"

BIN="$ROOT/.venv/bin"
KUBECTL="$ROOT/.tools/kubectl-1.35"
READY_TIMEOUT="${SKIFF_DEMO_READY_TIMEOUT:-60}"

log() { printf '[demo] %s\n' "$*" >&2; }

if [[ -n ${SKIFF_DEMO_DIR:-} ]]; then
    DATA_DIR="$SKIFF_DEMO_DIR"
    OWN_DIR=0
else
    DATA_DIR="$(mktemp -d /tmp/skiff-demo.XXXXXX)"
    OWN_DIR=1
fi
mkdir -p "$DATA_DIR"
KUBECONFIG_FILE="$DATA_DIR/admin.kubeconfig"
LOG_FILE="$DATA_DIR/server.log"
PORT="$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

SERVER_PID=""
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        log "stopping skiff server (pid $SERVER_PID)"
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
}
on_exit() {
    local rc=$?
    if [[ $rc -ne 0 && -f $LOG_FILE ]]; then
        log "failed (exit $rc); last lines of $LOG_FILE:"
        tail -n 40 "$LOG_FILE" >&2 || true
    fi
    [[ $KEEP -eq 1 && $rc -eq 0 ]] && return
    stop_server
    # Keep the data dir (and its server.log) when something failed, to look into it.
    if [[ $rc -eq 0 && $OWN_DIR -eq 1 ]]; then
        rm -rf "$DATA_DIR"
    elif [[ $rc -ne 0 ]]; then
        log "data dir and log kept in $DATA_DIR"
    fi
}
trap on_exit EXIT

log "starting skiff server on https://127.0.0.1:$PORT (data dir $DATA_DIR, log $LOG_FILE)"
"$BIN/skiff" server --data-dir "$DATA_DIR" --port "$PORT" --bind-address 127.0.0.1 >"$LOG_FILE" 2>&1 &
SERVER_PID=$!

# /readyz is anonymous; -k only for this probe, since the CA is not known until the
# server has written its kubeconfig. The clients below verify the certificate.
deadline=$((SECONDS + READY_TIMEOUT))
until [[ -f $KUBECONFIG_FILE ]] && [[ "$(curl -ks --max-time 2 "https://127.0.0.1:$PORT/readyz" || true)" == ok* ]]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "skiff server exited before it was ready"
        exit 1
    fi
    if [[ $SECONDS -ge $deadline ]]; then
        log "skiff server not ready after ${READY_TIMEOUT}s"
        exit 1
    fi
    sleep 0.2
done
log "ready"

log "\$ skiff --kubeconfig $KUBECONFIG_FILE get namespaces"
"$BIN/skiff" --kubeconfig "$KUBECONFIG_FILE" get namespaces

log "\$ kubectl (v1.35) --kubeconfig $KUBECONFIG_FILE get namespaces"
"$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --cache-dir "$DATA_DIR/kubectl-cache" get namespaces

if [[ $KEEP -eq 1 ]]; then
    log "server left running (pid $SERVER_PID); try:"
    log "  $KUBECTL --kubeconfig $KUBECONFIG_FILE get namespaces"
    log "  kill $SERVER_PID   # to stop it"
fi
