"""Kubernetes ``resource.Quantity``: "500m", "1Gi", "1.5", "2e3" as exact decimals.

Parsing follows apimachinery's ``ParseQuantity`` step by step, including which of its three
errors a bad string gets, so API error messages read like Kubernetes'. Values are kept as
``Decimal`` (Kubernetes keeps arbitrary precision too); the scheduler and the node agent
turn them into integers with ``cpu_millis`` and ``memory_bytes``, which round up exactly
like ``Quantity.MilliValue()`` and ``Quantity.Value()``.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_UP, Context, Decimal, localcontext

SPLIT_REGEX = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
ERR_FORMAT = f"quantities must match the regular expression '{SPLIT_REGEX}'"
ERR_NUMERIC = "unable to parse quantity's numeric part"
ERR_SUFFIX = "unable to parse quantity's suffix"

DECIMAL_SI = "DecimalSI"
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXP = {exp: suffix for suffix, exp in _DECIMAL.items()}
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_SUFFIX_CHARS = frozenset("eEinumkKMGTP")
_INT64_MAX = 2**63 - 1
# Kubernetes would wrap such exponents through an int32 cast; rejecting them keeps every
# later integer conversion small.
_MAX_MAGNITUDE = 1000


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity; the message is Kubernetes' own."""


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _split(s: str) -> tuple[str, str]:
    """Split into (signed number, suffix) as apimachinery's parseQuantityString does."""
    end = len(s)
    i = 1 if s[0] in "+-" else 0
    while i < end and _is_digit(s[i]):
        i += 1
    if i < end and s[i] == ".":
        i += 1
        while i < end and _is_digit(s[i]):
            i += 1
    j = i
    while j < end and s[j] in _SUFFIX_CHARS:
        j += 1
    if j < end and s[j] in "+-":
        j += 1
    while j < end and _is_digit(s[j]):
        j += 1
    if j != end:
        raise QuantityError(ERR_FORMAT)
    return s[:i], s[i:]


def _interpret(suffix: str) -> tuple[int, int, str] | None:
    """(base, exponent, format) for a suffix, or None when Kubernetes rejects it."""
    if suffix in _DECIMAL:
        return 10, _DECIMAL[suffix], DECIMAL_SI
    if suffix in _BINARY:
        return 2, _BINARY[suffix], BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE":
        rest = suffix[1:]
        digits = rest.lstrip("+-")
        if len(rest) - len(digits) > 1 or not digits or len(digits) > 19 or not all(map(_is_digit, digits)):
            return None
        exponent = int(rest)
        if not -(2**63) <= exponent <= _INT64_MAX:  # strconv.ParseInt range error
            return None
        return 10, exponent, DECIMAL_EXPONENT
    return None


def _parse(value: str | int | float) -> tuple[Decimal, str]:
    if isinstance(value, bool):
        raise QuantityError(ERR_FORMAT)
    if isinstance(value, int):
        return Decimal(value), DECIMAL_SI
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise QuantityError(ERR_FORMAT)
        value = repr(value)
    if not isinstance(value, str):
        raise QuantityError(ERR_FORMAT)
    s = value.strip()  # Quantity.UnmarshalJSON trims surrounding space
    if not s:
        raise QuantityError(ERR_FORMAT)
    number, suffix = _split(s)
    interpreted = _interpret(suffix)
    if interpreted is None:
        raise QuantityError(ERR_SUFFIX)
    base, exponent, fmt = interpreted
    if number.lstrip("+-") in ("", "."):
        raise QuantityError(ERR_NUMERIC)
    mantissa = Decimal(number)
    if mantissa == 0:
        return Decimal(0), fmt
    if abs(mantissa.adjusted() + (exponent if base == 10 else exponent * 3 // 10)) > _MAX_MAGNITUDE:
        raise QuantityError(ERR_NUMERIC)
    with localcontext(Context(prec=len(number) + 40)):
        scaled = mantissa.scaleb(exponent) if base == 10 else mantissa * (2**exponent)
    return scaled, fmt


def parse_quantity(value: str | int | float) -> Decimal:
    """The exact value of a quantity; raises QuantityError with Kubernetes' message."""
    return _parse(value)[0]


def quantity_format(value: str | int | float) -> str:
    """DecimalSI, BinarySI or DecimalExponent, from the quantity's suffix (as Kubernetes
    remembers it to print the value back the way it was written)."""
    return _parse(value)[1]


def _as_decimal(q: Decimal | str | int | float) -> Decimal:
    return q if isinstance(q, Decimal) else parse_quantity(q)


def _round_int(d: Decimal, rounding: str) -> int:
    if d >= _INT64_MAX:
        return _INT64_MAX
    if d <= -_INT64_MAX - 1:
        return -_INT64_MAX - 1
    with localcontext(Context(prec=60)):
        return int(d.to_integral_value(rounding=rounding))


def cpu_millis(q: Decimal | str | int | float) -> int:
    """ceil(q * 1000), like Quantity.MilliValue(); clamped to int64."""
    d = _as_decimal(q)
    with localcontext(Context(prec=80)):
        return _round_int(d * 1000, ROUND_CEILING)


def memory_bytes(q: Decimal | str | int | float) -> int:
    """ceil(q), like Quantity.Value(); clamped to int64."""
    return _round_int(_as_decimal(q), ROUND_CEILING)


def format_quantity(q: Decimal | str | int | float, fmt: str = DECIMAL_SI) -> str:
    """Kubernetes' canonical form: ``1.5`` -> ``1500m``, ``2048Mi`` (BinarySI) -> ``2Gi``.

    BinarySI falls back to DecimalSI for values that are not whole numbers or lie within
    (-1024, 1024), and DecimalSI rounds up to nano precision, as Quantity.String() does.
    """
    d = _as_decimal(q)
    if d == 0:
        return "0"
    if fmt == BINARY_SI and (abs(d) < 1024 or d != d.to_integral_value()):
        fmt = DECIMAL_SI
    with localcontext(Context(prec=2 * _MAX_MAGNITUDE + 100)):
        if fmt == BINARY_SI:
            n, exp = int(d), 0
            while exp < len(_BINARY_SUFFIXES) - 1 and n % 1024 == 0:
                n, exp = n // 1024, exp + 1
            return f"{n}{_BINARY_SUFFIXES[exp]}"
        mantissa, exp = int((d * 10**9).to_integral_value(rounding=ROUND_UP)), -9
    while mantissa % 1000 == 0:
        mantissa, exp = mantissa // 1000, exp + 3
    if fmt == DECIMAL_EXPONENT or exp not in _DECIMAL_BY_EXP:
        return f"{mantissa}e{exp}" if exp else str(mantissa)
    return f"{mantissa}{_DECIMAL_BY_EXP[exp]}"


def canonicalize_quantity(value: str | int | float) -> str:
    """Re-print a quantity the way the API server stores it (``0.5`` -> ``500m``)."""
    d, fmt = _parse(value)
    return format_quantity(d, fmt)
