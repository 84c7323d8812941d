"""Run a host tool (``ip``, ``iptables``, ``nsenter``) with an argument list, never a shell."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from node_agent.lab.layout import LabError

TIMEOUT = 30.0


def run(argv: list[str], *, check: bool = True, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        output = proc.stderr.strip() or proc.stdout.strip()
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {output}")
    return proc


def run_json(argv: list[str]) -> Any:
    """Run a tool that prints JSON (``ip -j ...``); empty output is an empty list."""
    out = run(argv).stdout.strip()
    if not out:
        return []
    try:
        return json.loads(out)
    except ValueError as exc:
        raise LabError(f"`{' '.join(argv)}` printed something that is not JSON: {exc}") from exc
