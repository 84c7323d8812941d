"""The WebSocket remote-command protocol (``v5.channel.k8s.io``) behind exec.

Every binary frame starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the final
Status (JSON), 4 terminal resize (JSON ``{"Width": w, "Height": h}``); with v5, 255
followed by a channel number closes that channel (``ff 00`` closes stdin).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from skiff.client.api import ApiClient, resolve_type

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def exit_code_from_status(status: dict[str, Any] | None) -> int | None:
    """0 on Success; the code from ``details.causes[reason=ExitCode]`` on NonZeroExitCode;
    None when the Status says something else went wrong (or there was none)."""
    if status is None:
        return None
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", ""))
            except ValueError:
                return None
    return None


class ExecSession:
    """One running remote command. Iterate it for ``(channel, data)`` output frames; the
    iteration ends when the server closes the socket, and ``status`` then holds the final
    Status (if one was sent)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.status: dict[str, Any] | None = None

    @property
    def protocol(self) -> str | None:
        return self.ws.protocol

    @property
    def exit_code(self) -> int | None:
        return exit_code_from_status(self.status)

    async def write_stdin(self, data: bytes) -> None:
        await self.ws.send_bytes(bytes([STDIN]) + data)

    async def close_stdin(self) -> None:
        # v4 has no way to signal EOF on one channel; the remote sees it when the socket closes.
        if self.protocol == PROTOCOLS[0]:
            await self.ws.send_bytes(bytes([CLOSE, STDIN]))

    async def resize(self, width: int, height: int) -> None:
        await self.ws.send_bytes(bytes([RESIZE]) + json.dumps({"Width": width, "Height": height}).encode())

    async def close(self) -> None:
        await self.ws.close()

    async def __aiter__(self) -> AsyncIterator[tuple[int, bytes]]:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                if msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                    break
                continue
            data: bytes = msg.data
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == ERROR:
                if payload:
                    try:
                        self.status = json.loads(payload)
                    except ValueError:
                        self.status = {"status": "Failure", "message": payload.decode(errors="replace")}
                continue
            if payload:
                yield channel, payload


async def open_exec(client: ApiClient, name: str, command: Sequence[str], namespace: str | None = None, *,
                    container: str | None = None, stdin: bool = False, stdout: bool = True, stderr: bool = True,
                    tty: bool = False) -> ExecSession:
    """Start ``command`` in a pod's container and return the session."""
    if not command:
        raise ValueError("exec needs a command")
    rt = resolve_type("pods")
    ns = namespace or client.namespace
    # Like kubectl: false flags are left out rather than sent as "false".
    params: list[tuple[str, str | bool | None]] = [("command", c) for c in command]
    params += [("container", container), ("stdin", stdin or None), ("stdout", stdout or None),
               ("stderr", (stderr and not tty) or None), ("tty", tty or None)]
    ws = await client.ws_connect(rt.path(ns, name, "exec"), params=params, protocols=PROTOCOLS)
    return ExecSession(ws)
