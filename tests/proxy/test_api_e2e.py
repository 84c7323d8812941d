"""The proxy against a real API server: informers -> rules, in-process and as ``skiff proxy``.

The rules go into a namespace the test makes. ``skiff proxy`` runs inside it under
``nsenter`` and reaches the server through the agent tests' forwarder (a socket on the
namespace's 127.0.0.1 relaying to the server on the host's).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from node_agent.lab.controlplane import skiff_command
from node_agent.proxy.iptables_rules import JUMP_RULES, service_chain
from node_agent.proxy.model import ServicePortName
from node_agent.proxy.proxier import make_proxier
from node_agent.proxy.settings import ProxySettings
from skiff.client import ApiClient, load_kubeconfig
from tests.node_agent.agent_harness import Forwarder, listen_in_netns
from tests.proxy.netns import NEEDS_ROOT, NEEDS_TOOLS, Netns, NetnsFactory

pytestmark = [NEEDS_ROOT, NEEDS_TOOLS]

Obj = dict[str, Any]


def service(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpoint_slice(name: str, service_name: str, ip: str, ready: bool = True) -> Obj:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}, "nodeName": "node-a"}]}


async def until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_services_and_slices_from_the_api_become_rules(api_server: Any, namespace: str,
                                                             netns: NetnsFactory) -> None:
    ns = netns.make("a")
    async with ApiClient(load_kubeconfig(str(api_server.kubeconfig))) as client:
        settings = ProxySettings(node_name="node-a", min_sync_period=0.05, sync_period=30)
        proxier = make_proxier(client, settings, netns=ns.path)
        task = asyncio.create_task(proxier.run())
        try:
            created = await client.create("services", service("web"), namespace)
            cip = created["spec"]["clusterIP"]
            reject = f"-d {cip}/32 -p tcp -m comment --comment \"{namespace}/web:http has no endpoints\""
            await until(lambda: reject in ns.save(), "the REJECT of a Service without endpoints")
            await client.create("endpointslices", endpoint_slice("web-1", "web", "10.244.5.5"), namespace)
            await until(lambda: "--to-destination 10.244.5.5:8080" in ns.save() and reject not in ns.save(),
                        "the DNAT to the ready endpoint")
            await client.patch("endpointslices", "web-1",
                               {"endpoints": [{"addresses": ["10.244.5.5"], "conditions": {"ready": False}}]},
                               namespace)
            await until(lambda: "10.244.5.5" not in ns.save() and reject in ns.save(),
                        "the endpoint that is no longer ready to go")
            await client.delete("services", "web", namespace)
            chain = service_chain(ServicePortName(namespace, "web", "http", "TCP"))
            await until(lambda: cip not in ns.save() and chain not in ns.save(), "the deleted Service's rules to go")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def start_proxy(ns: Netns, kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = ns.argv(*skiff_command(), "proxy", "--kubeconfig", str(kubeconfig), "--hostname-override", "node-a",
                   "--iptables-min-sync-period", "100ms")
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


async def test_skiff_proxy_alone_follows_the_api_and_restarts_cleanly(api_server: Any, namespace: str,
                                                                      netns: NetnsFactory, tmp_path: Path) -> None:
    ns = netns.make("p")
    forwarder = Forwarder(listen_in_netns(ns.path), ("127.0.0.1", api_server.port))
    config = yaml.safe_load(api_server.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{forwarder.port}"
    kubeconfig = tmp_path / "proxy.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    log = tmp_path / "proxy.log"
    proc = start_proxy(ns, kubeconfig, log)
    try:
        async with ApiClient(load_kubeconfig(str(api_server.kubeconfig))) as client:
            await client.create("services", service("api"), namespace)
            await client.create("endpointslices", endpoint_slice("api-1", "api", "10.244.6.6"), namespace)
        chain = service_chain(ServicePortName(namespace, "api", "http", "TCP"))

        def mine() -> list[str]:
            return [line for line in ns.save().splitlines() if chain in line or "10.244.6.6" in line]

        await until(lambda: any("--to-destination 10.244.6.6:8080" in line for line in mine()),
                    f"skiff proxy to write the Service's rules (log: {log})")
        before = mine()
        assert stop(proc) == 0, log.read_text()
        assert mine() == before, "the rules stay while the proxy is down, as kube-proxy's do"

        proc = start_proxy(ns, kubeconfig, log)
        await until(lambda: log.read_text().count("full sync of") >= 2, "the restarted proxy's first sync")
        saved = ns.save()
        assert mine() == before
        for jump in JUMP_RULES:
            assert saved.count(jump.save_line()) == 1, jump
    finally:
        stop(proc)
        forwarder.close()
