"""A port of Go's text/tabwriter, so tables and describe output line up exactly as kubectl's.

Cells are separated by tabs; only tab-terminated cells are aligned, so the last cell of
a line is never padded. A column's width is decided per block of consecutive lines that
all have a cell in that column, which is why a line without tabs (a section header)
starts a new alignment block.
"""

from __future__ import annotations

GET_PADDING = 3  # kubectl get: tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
DESCRIBE_PADDING = 2  # kubectl describe: tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)


def format_tabbed(text: str, padding: int = GET_PADDING, minwidth: int = 0) -> str:
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    _format(lines, 0, len(lines), [], padding, minwidth, out)
    return "\n".join(out)


def _format(lines: list[list[str]], line0: int, line1: int, widths: list[int], padding: int, minwidth: int,
            out: list[str]) -> None:
    column = len(widths)
    this = line0
    while this < line1:
        if column >= len(lines[this]) - 1:
            this += 1
            continue
        _write(lines, line0, this, widths, out)
        line0 = this
        width = minwidth
        while this < line1 and column < len(lines[this]) - 1:
            width = max(width, len(lines[this][column]) + padding)
            this += 1
        _format(lines, line0, this, [*widths, width], padding, minwidth, out)
        line0 = this
    _write(lines, line0, line1, widths, out)


def _write(lines: list[list[str]], line0: int, line1: int, widths: list[int], out: list[str]) -> None:
    for cells in lines[line0:line1]:
        parts = [cell.ljust(widths[j]) if j < len(widths) else cell for j, cell in enumerate(cells)]
        out.append("".join(parts))
