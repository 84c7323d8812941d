"""``skiff exec``: run a command in a container over the ``v5.channel.k8s.io`` WebSocket.

The local terminal is switched to raw mode for ``-t`` and always restored; stdin is
pumped from an event-loop reader (not a thread, which could not be cancelled while it
blocks in read); the process exits with the remote command's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import BinaryIO

from skiff.cli.context import Cli, CliError
from skiff.cli.logs import pod_name
from skiff.client.remotecommand import STDERR, ExecSession, open_exec

READ_SIZE = 65536


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None


async def pump_stdin(session: ExecSession, fd: int) -> None:
    """Forward everything read from ``fd`` to the stdin channel, then signal EOF."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        queue.put_nowait(data)

    try:
        loop.add_reader(fd, readable)
        registered = True
    except (PermissionError, ValueError, OSError):
        # Regular files cannot be polled; they never block, so read them whole in a thread.
        registered = False
        data = await asyncio.to_thread(_read_all, fd)
        if data:
            queue.put_nowait(data)
        queue.put_nowait(b"")
    try:
        while True:
            chunk = await queue.get()
            if not chunk:
                await session.close_stdin()
                return
            await session.write_stdin(chunk)
    finally:
        if registered:
            loop.remove_reader(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, READ_SIZE):
        chunks.append(chunk)
    return b"".join(chunks)


def _binary(stream: object) -> BinaryIO | None:
    buffer = getattr(stream, "buffer", None)
    return buffer if buffer is not None else None


async def cmd_exec(cli: Cli, args: argparse.Namespace) -> int:
    command = list(args.command)
    if not command:
        raise CliError("you must specify at least one command for the container")
    name = pod_name(cli, args.pod)
    fd = _stdin_fd() if args.stdin else None
    if args.stdin and fd is None:
        raise CliError("cannot read stdin")
    use_tty = bool(args.tty)
    if use_tty and (fd is None or not os.isatty(fd)):
        cli.warn("Unable to use a TTY - input is not a terminal or the right kind of file")
        use_tty = False
    session = await open_exec(cli.client, name, command, cli.namespace, container=args.container,
                              stdin=args.stdin, tty=use_tty)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    with contextlib.ExitStack() as stack:
        if use_tty and fd is not None:
            stack.enter_context(raw_terminal(fd))
            await _send_size(session, fd)
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGWINCH,
                                        lambda: tasks.append(loop.create_task(_send_size(session, fd))))
                stack.callback(loop.remove_signal_handler, signal.SIGWINCH)
        if fd is not None:
            tasks.append(loop.create_task(pump_stdin(session, fd)))
        try:
            await _copy_output(cli, session)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
    code = session.exit_code
    if code is None:
        if session.status is not None:
            raise CliError(str(session.status.get("message") or "remote command failed"))
        return 0
    if code != 0:
        cli.warn(f"command terminated with exit code {code}")
    return code


async def _send_size(session: ExecSession, fd: int) -> None:
    with contextlib.suppress(OSError):
        size = os.get_terminal_size(fd)
        await session.resize(size.columns, size.lines)


async def _copy_output(cli: Cli, session: ExecSession) -> None:
    out, err = _binary(cli.out), _binary(cli.err)
    async for channel, data in session:
        stream, text = (err, cli.err) if channel == STDERR else (out, cli.out)
        if stream is not None:
            text.flush()
            stream.write(data)
            stream.flush()
        else:
            text.write(data.decode(errors="replace"))
            text.flush()
