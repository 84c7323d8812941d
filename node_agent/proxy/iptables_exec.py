"""The adapter around the iptables command-line tools (blocking; call it through a thread).

Argument lists only, never a shell. ``netns`` runs every tool inside that network
namespace through ``nsenter`` (tests and benchmarks; the agent already runs inside its
node's namespace). The tools are the system's ``iptables``/``iptables-restore``/
``iptables-save`` — on Debian 12 the nf_tables backend, the same one Docker and the lab
use, so every rule of the namespace shows in one ``iptables-save``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

WAIT_SECONDS = "5"  # -w: wait this long for the xtables lock instead of failing at once
_FAILED_LINE = re.compile(r"line (\d+) failed")


class IptablesError(Exception):
    """An iptables tool failed; the message says which command and why."""


def _context(text: str, line_no: int, around: int = 3) -> str:
    lines = text.splitlines()
    lo, hi = max(0, line_no - 1 - around), min(len(lines), line_no + around)
    return "\n".join(f"{'>' if i + 1 == line_no else ' '}{i + 1:6d}: {lines[i]}" for i in range(lo, hi))


class Iptables(Protocol):
    """What the applier needs from iptables (tests pass a fake)."""

    def restore(self, text: str) -> None: ...
    def save(self, table: str) -> str: ...
    def has_rule(self, table: str, chain: str, args: Sequence[str]) -> bool: ...
    def insert_rule(self, table: str, chain: str, args: Sequence[str]) -> None: ...
    def delete_rule(self, table: str, chain: str, args: Sequence[str]) -> bool: ...
    def has_chain(self, table: str, chain: str) -> bool: ...
    def ensure_chain(self, table: str, chain: str) -> None: ...


@dataclass
class IptablesExec:
    netns: str | None = None  # a path such as /run/netns/NAME, or None for the current namespace
    iptables: str = "iptables"
    restore_cmd: str = "iptables-restore"
    save_cmd: str = "iptables-save"
    timeout: float = 120.0

    def _argv(self, *argv: str) -> list[str]:
        prefix = ["nsenter", f"--net={self.netns}", "--"] if self.netns else []
        return [*prefix, *argv]

    def _run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise IptablesError(f"{argv[0]}: {exc}") from exc

    def restore(self, text: str) -> None:
        """``iptables-restore --noflush``: one atomic transaction per table; other chains untouched."""
        proc = self._run(self._argv(self.restore_cmd, "--noflush", "-w", WAIT_SECONDS), stdin=text)
        if proc.returncode != 0:
            err = proc.stderr.strip()
            m = _FAILED_LINE.search(err)
            where = f"\n{_context(text, int(m.group(1)))}" if m else ""
            raise IptablesError(f"{self.restore_cmd} exited {proc.returncode}: {err}{where}")

    def save(self, table: str) -> str:
        proc = self._run(self._argv(self.save_cmd, "-t", table))
        if proc.returncode != 0:
            raise IptablesError(f"{self.save_cmd} -t {table} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def _iptables(self, table: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run(self._argv(self.iptables, "-w", WAIT_SECONDS, "-t", table, *args))

    def has_rule(self, table: str, chain: str, args: Sequence[str]) -> bool:
        return self._iptables(table, "-C", chain, *args).returncode == 0

    def insert_rule(self, table: str, chain: str, args: Sequence[str]) -> None:
        proc = self._iptables(table, "-I", chain, "1", *args)
        if proc.returncode != 0:
            raise IptablesError(f"iptables -t {table} -I {chain} {' '.join(args)}: {proc.stderr.strip()}")

    def delete_rule(self, table: str, chain: str, args: Sequence[str]) -> bool:
        """Delete one copy of the rule; False if there was none."""
        return self._iptables(table, "-D", chain, *args).returncode == 0

    def has_chain(self, table: str, chain: str) -> bool:
        return self._iptables(table, "-n", "-L", chain).returncode == 0

    def ensure_chain(self, table: str, chain: str) -> None:
        proc = self._iptables(table, "-N", chain)
        if proc.returncode != 0 and not self.has_chain(table, chain):
            raise IptablesError(f"iptables -t {table} -N {chain}: {proc.stderr.strip()}")

    def delete_chain(self, table: str, chain: str) -> None:
        """Flush and delete; a missing chain is not an error."""
        if not self.has_chain(table, chain):
            return
        self._iptables(table, "-F", chain)
        proc = self._iptables(table, "-X", chain)
        if proc.returncode != 0 and self.has_chain(table, chain):
            raise IptablesError(f"iptables -t {table} -X {chain}: {proc.stderr.strip()}")


def chains_in_save(text: str) -> list[str]:
    """The chain names an ``iptables-save`` of one table declares (``:NAME POLICY [p:b]``)."""
    return [line[1:].split(" ", 1)[0] for line in text.splitlines() if line.startswith(":")]


def rules_in_save(text: str) -> set[str]:
    return {line for line in text.splitlines() if line.startswith("-A ")}
