"""A fake `IptablesExec`: keeps chains in memory the way ``iptables-restore --noflush`` would."""

from __future__ import annotations

from collections.abc import Sequence

from node_agent.proxy.iptables_exec import IptablesError

BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}


class FakeIptables:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, list[str]]] = {t: {c: [] for c in chains} for t, chains in BUILTIN.items()}
        self.restores: list[str] = []
        self.fail_next: str | None = None  # an error message for the next restore
        self.calls: list[str] = []

    def restore(self, text: str) -> None:
        self.calls.append("restore")
        if self.fail_next is not None:
            message, self.fail_next = self.fail_next, None
            raise IptablesError(message)
        self.restores.append(text)
        # one transaction per table, checked at COMMIT like the kernel does: no jump to a
        # chain that does not exist, no deletion of a chain something still jumps to
        name = ""
        table: dict[str, list[str]] = {}
        for line in text.splitlines():
            if line.startswith("*"):
                name = line[1:]
                table = {chain: list(rules) for chain, rules in self.tables[name].items()}
            elif line.startswith(":"):
                table[line[1:].split(" ", 1)[0]] = []  # declare = create or flush
            elif line.startswith("-A "):
                chain = line.split(" ", 2)[1]
                if chain not in table:
                    raise IptablesError(f"chain {chain} does not exist")
                table[chain].append(line)
            elif line.startswith("-X "):
                del table[line[3:]]
            elif line == "COMMIT":
                for rules in table.values():
                    for rule in rules:
                        target = rule.rsplit(" -j ", 1)[1].split(" ", 1)[0]
                        if target.startswith("KUBE-") and target not in table:
                            raise IptablesError(f"{rule}: no chain {target}")
                self.tables[name] = table

    def save(self, table: str) -> str:
        self.calls.append(f"save {table}")
        chains = self.tables[table]
        lines = [f"*{table}"]
        lines += [f":{c} {'ACCEPT' if c in BUILTIN[table] else '-'} [0:0]" for c in chains]
        lines += [rule for rules in chains.values() for rule in rules]
        return "\n".join([*lines, "COMMIT", ""])

    def has_rule(self, table: str, chain: str, args: Sequence[str]) -> bool:
        return self._line(chain, args) in self.tables[table].get(chain, [])

    def insert_rule(self, table: str, chain: str, args: Sequence[str]) -> None:
        self.calls.append(f"insert {table} {chain}")
        self.tables[table][chain].insert(0, self._line(chain, args))

    def delete_rule(self, table: str, chain: str, args: Sequence[str]) -> bool:
        rules = self.tables[table].get(chain, [])
        line = self._line(chain, args)
        if line in rules:
            rules.remove(line)
            return True
        return False

    def has_chain(self, table: str, chain: str) -> bool:
        return chain in self.tables[table]

    def ensure_chain(self, table: str, chain: str) -> None:
        self.tables[table].setdefault(chain, [])

    @staticmethod
    def _line(chain: str, args: Sequence[str]) -> str:
        return " ".join(["-A", chain, *(f'"{a}"' if " " in a else a for a in args)])


class FakeConntrack:
    def __init__(self) -> None:
        self.flows: list[list[str]] = []

    def clear(self, flows: list[list[str]]) -> int:
        self.flows.extend(flows)
        return len(flows)
