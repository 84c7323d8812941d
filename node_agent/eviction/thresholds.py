"""Eviction signals and thresholds, parsed from kubelet's flags.

``--eviction-hard=memory.available<100Mi,nodefs.available<10%``, ``--eviction-soft`` (same
form, each with a ``--eviction-soft-grace-period=memory.available=1m30s``) and
``--eviction-minimum-reclaim=memory.available=100Mi``, as kubelet's ParseThresholdConfig
reads them: an unknown signal or a soft threshold without a grace period is an error, ``0%``
and ``100%`` switch a threshold off, a quantity must be positive.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skiff.api.durations import parse_go_duration
from skiff.api.quantity import BINARY_SI, DECIMAL_SI, QuantityError, format_quantity, parse_quantity, quantity_format

if TYPE_CHECKING:
    from node_agent.settings import EvictionSettings

MEMORY_AVAILABLE = "memory.available"
NODEFS_AVAILABLE = "nodefs.available"
NODEFS_INODES_FREE = "nodefs.inodesFree"
IMAGEFS_AVAILABLE = "imagefs.available"
IMAGEFS_INODES_FREE = "imagefs.inodesFree"
PID_AVAILABLE = "pid.available"
SIGNALS = (MEMORY_AVAILABLE, NODEFS_AVAILABLE, NODEFS_INODES_FREE, IMAGEFS_AVAILABLE, IMAGEFS_INODES_FREE,
           PID_AVAILABLE)

# The resource each signal starves (kubelet's signalToResource) and the node condition it sets.
MEMORY = "memory"
EPHEMERAL_STORAGE = "ephemeral-storage"
INODES = "inodes"
PIDS = "pids"
SIGNAL_RESOURCE = {
    MEMORY_AVAILABLE: MEMORY, NODEFS_AVAILABLE: EPHEMERAL_STORAGE, NODEFS_INODES_FREE: INODES,
    IMAGEFS_AVAILABLE: EPHEMERAL_STORAGE, IMAGEFS_INODES_FREE: INODES, PID_AVAILABLE: PIDS,
}
MEMORY_PRESSURE = "MemoryPressure"
DISK_PRESSURE = "DiskPressure"
PID_PRESSURE = "PIDPressure"
SIGNAL_CONDITION = {
    MEMORY_AVAILABLE: MEMORY_PRESSURE, NODEFS_AVAILABLE: DISK_PRESSURE, NODEFS_INODES_FREE: DISK_PRESSURE,
    IMAGEFS_AVAILABLE: DISK_PRESSURE, IMAGEFS_INODES_FREE: DISK_PRESSURE, PID_AVAILABLE: PID_PRESSURE,
}
# Bytes print as BinarySI quantities (``80Mi``), counts as DecimalSI (``1k``), as in kubelet's messages.
_BYTES_SIGNALS = {MEMORY_AVAILABLE, NODEFS_AVAILABLE, IMAGEFS_AVAILABLE}


def _float32(value: float) -> float:
    """kubelet keeps percentages as float32: 10% is 0.100000001490116..., which decides the last byte."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


@dataclass(frozen=True)
class ThresholdValue:
    """A quantity (bytes, inodes or pids) or a fraction of the signal's capacity."""

    quantity: int | None = None
    percentage: float = 0.0
    format: str = BINARY_SI  # how the quantity was written, to print it back alike

    def resolve(self, capacity: int) -> int:
        """kubelet's GetThresholdQuantity."""
        if self.quantity is not None:
            return self.quantity
        return int(float(capacity) * self.percentage)

    def describe(self, capacity: int) -> str:
        if self.quantity is not None:
            return format_quantity(self.quantity, self.format)
        return format_quantity(self.resolve(capacity), BINARY_SI)


@dataclass(frozen=True)
class Threshold:
    signal: str
    value: ThresholdValue
    grace_period: float = 0.0  # seconds; 0 makes it a hard threshold
    min_reclaim: ThresholdValue | None = None

    @property
    def hard(self) -> bool:
        return self.grace_period == 0

    def quantity(self, capacity: int) -> int:
        return self.value.resolve(capacity)

    def __str__(self) -> str:
        value = f"{self.value.quantity}" if self.value.quantity is not None else f"{self.value.percentage:.0%}"
        kind = "hard" if self.hard else f"soft, grace {self.grace_period:g}s"
        return f"{self.signal}<{value} ({kind})"


def format_amount(signal: str, amount: int) -> str:
    """An observed amount of the signal's resource, as kubelet's quantities print it."""
    return format_quantity(amount, BINARY_SI if signal in _BYTES_SIGNALS else DECIMAL_SI)


# -- parsing -----------------------------------------------------------------------------------


def _pairs(text: str, separator: str, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition(separator)
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag}: expected SIGNAL{separator}VALUE, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def _check_signal(signal: str, flag: str) -> None:
    if signal not in SIGNALS:
        raise ValueError(f"{flag}: unsupported eviction signal {signal} (supported: {', '.join(SIGNALS)})")


def _percentage(text: str, flag: str) -> float:
    try:
        return _float32(float(text[:-1]) / 100)
    except ValueError:
        raise ValueError(f"{flag}: invalid percentage {text!r}") from None


def _quantity(text: str, flag: str) -> tuple[int, str]:
    try:
        value = parse_quantity(text)
        fmt = quantity_format(text)
    except QuantityError as exc:
        raise ValueError(f"{flag}: invalid quantity {text!r}: {exc}") from None
    return int(value.to_integral_value(rounding="ROUND_CEILING")), fmt


def parse_threshold_statement(signal: str, text: str, flag: str = "--eviction-hard") -> Threshold | None:
    """One ``signal<value``; None for 0% and 100% (a threshold switched off)."""
    _check_signal(signal, flag)
    if text.endswith("%"):
        if text in ("0%", "100%"):
            return None
        percentage = _percentage(text, flag)
        if percentage < 0:
            raise ValueError(f"{flag}: eviction percentage threshold {signal} must be >= 0%: {text}")
        if percentage > 1:
            raise ValueError(f"{flag}: eviction percentage threshold {signal} must be <= 100%: {text}")
        return Threshold(signal, ThresholdValue(percentage=percentage))
    quantity, fmt = _quantity(text, flag)
    if quantity <= 0:
        raise ValueError(f"{flag}: eviction threshold {signal} must be positive: {text}")
    return Threshold(signal, ThresholdValue(quantity=quantity, format=fmt))


def _statements(text: str, flag: str) -> list[Threshold]:
    out = []
    for signal, value in _pairs(text, "<", flag).items():
        threshold = parse_threshold_statement(signal, value, flag)
        if threshold is not None:
            out.append(threshold)
    return out


parse_duration = parse_go_duration


def _grace_periods(text: str) -> dict[str, float]:
    flag = "--eviction-soft-grace-period"
    out = {}
    for signal, value in _pairs(text, "=", flag).items():
        _check_signal(signal, flag)
        try:
            period = parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None
        if period < 0:
            raise ValueError(f"{flag}: invalid eviction grace period specified: {value}, must be a positive value")
        out[signal] = period
    return out


def _minimum_reclaims(text: str) -> dict[str, ThresholdValue]:
    flag = "--eviction-minimum-reclaim"
    out = {}
    for signal, value in _pairs(text, "=", flag).items():
        _check_signal(signal, flag)
        if value.endswith("%"):
            percentage = _percentage(value, flag)
            if percentage <= 0:
                raise ValueError(f"{flag}: eviction percentage minimum reclaim {signal} must be positive: {value}")
            out[signal] = ThresholdValue(percentage=percentage)
            continue
        quantity, fmt = _quantity(value, flag)
        if quantity < 0:
            raise ValueError(f"{flag}: negative eviction minimum reclaim specified for {signal}")
        out[signal] = ThresholdValue(quantity=quantity, format=fmt)
    return out


def parse_threshold_config(hard: str, soft: str = "", soft_grace_period: str = "",
                           minimum_reclaim: str = "") -> list[Threshold]:
    """kubelet's ParseThresholdConfig: the hard thresholds, then the soft ones, each with its
    minimum reclaim."""
    results = _statements(hard, "--eviction-hard")
    periods = _grace_periods(soft_grace_period)
    for threshold in _statements(soft, "--eviction-soft"):
        if threshold.signal not in periods:
            raise ValueError(f"--eviction-soft-grace-period: grace period must be specified for the soft eviction "
                             f"threshold {threshold.signal}")
        results.append(Threshold(threshold.signal, threshold.value, periods[threshold.signal]))
    reclaims = _minimum_reclaims(minimum_reclaim)
    return [Threshold(t.signal, t.value, t.grace_period, reclaims.get(t.signal)) for t in results]


def parse_settings(settings: EvictionSettings) -> list[Threshold]:
    """The thresholds of the agent's eviction settings; ValueError names the bad flag."""
    if settings.pressure_transition_period < 0:
        raise ValueError("--eviction-pressure-transition-period must not be negative")
    if settings.monitoring_period <= 0:
        raise ValueError("--eviction-monitoring-period must be positive")
    return parse_threshold_config(settings.hard, settings.soft, settings.soft_grace_period,
                                  settings.minimum_reclaim)
