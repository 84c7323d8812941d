"""``skiff logs``: a container's log, streamed as it arrives (``-f`` keeps following)."""

from __future__ import annotations

import argparse
import codecs
from contextlib import aclosing

from skiff.cli.context import Cli, CliError


def pod_name(cli: Cli, word: str) -> str:
    """``NAME`` or ``pod/NAME`` (only pods have logs and exec here)."""
    if "/" in word:
        type_name, name = word.split("/", 1)
        if cli.resolve(type_name).kind != "Pod":
            raise CliError(f"cannot use {type_name}/{name}: only pods are supported")
        return name
    return word


async def cmd_logs(cli: Cli, args: argparse.Namespace) -> int:
    name = pod_name(cli, args.pod)
    binary = getattr(cli.out, "buffer", None)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stream = cli.client.stream_log(name, cli.namespace, container=args.container, follow=args.follow,
                                   tail_lines=args.tail if args.tail is not None and args.tail >= 0 else None,
                                   previous=args.previous, timestamps=args.timestamps,
                                   since_seconds=args.since, limit_bytes=args.limit_bytes)
    async with aclosing(stream):
        async for chunk in stream:
            if binary is not None:
                cli.out.flush()
                binary.write(chunk)
                binary.flush()
            else:
                cli.out.write(decoder.decode(chunk))
                cli.out.flush()
    if binary is None:
        cli.out.write(decoder.decode(b"", final=True))
    return 0


def parse_since(value: str) -> int:
    """``10s``, ``5m``, ``2h`` (or plain seconds) into seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if value and value[-1] in units:
            return int(float(value[:-1]) * units[value[-1]])
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r}") from None
