"""Lifecycle hooks (postStart, preStop): exec in the container, httpGet to the pod, or sleep.

`run_handler` returns None on success or the failure message kubelet would put in the
FailedPostStartHook / FailedPreStopHook event. It never waits longer than ``timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp

from node_agent.runtime.docker_adapter import DockerAdapter, DockerError


def _port(value: Any, container: Mapping[str, Any]) -> int:
    if isinstance(value, int):
        return value
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    return int(value)


async def run_handler(docker: DockerAdapter, handler: Mapping[str, Any], container: Mapping[str, Any],
                      container_id: str, pod_ip: str | None, timeout: float) -> str | None:
    try:
        return await asyncio.wait_for(_run(docker, handler, container, container_id, pod_ip), timeout)
    except TimeoutError:
        return f"hook did not finish within {timeout:.0f}s"


async def _run(docker: DockerAdapter, handler: Mapping[str, Any], container: Mapping[str, Any],
               container_id: str, pod_ip: str | None) -> str | None:
    if handler.get("exec"):
        command = [str(c) for c in handler["exec"].get("command") or []]
        try:
            result = await docker.exec(container_id, command)
        except DockerError as exc:
            return f"Exec lifecycle hook ({command}) for Container \"{container.get('name')}\" failed - error: {exc}"
        if result.exit_code != 0:
            return (f"Exec lifecycle hook ({command}) for Container \"{container.get('name')}\" failed - error: "
                    f"command '{' '.join(command)}' exited with {result.exit_code}: "
                    f"{result.output.decode(errors='replace')}, message: \"{result.output.decode(errors='replace')}\"")
        return None
    if handler.get("httpGet"):
        get = handler["httpGet"]
        host = get.get("host") or pod_ip or "127.0.0.1"
        scheme = str(get.get("scheme") or "HTTP").lower()
        path = str(get.get("path") or "/")
        url = f"{scheme}://{host}:{_port(get.get('port'), container)}{path if path.startswith('/') else '/' + path}"
        headers = {h["name"]: h.get("value", "") for h in get.get("httpHeaders") or []}
        try:
            async with aiohttp.ClientSession() as session, \
                    session.get(url, headers=headers, ssl=False) as resp:
                if resp.status >= 400:
                    return f"HTTP lifecycle hook ({path}) for Container \"{container.get('name')}\" failed - " \
                           f"error: HTTP status code {resp.status}"
        except (aiohttp.ClientError, OSError) as exc:
            return f"HTTP lifecycle hook ({path}) for Container \"{container.get('name')}\" failed - error: {exc}"
        return None
    if handler.get("sleep"):
        await asyncio.sleep(float(handler["sleep"].get("seconds") or 0))
        return None
    return None
