from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skiff.api.quantity import (
    BINARY_SI,
    DECIMAL_EXPONENT,
    DECIMAL_SI,
    ERR_FORMAT,
    ERR_NUMERIC,
    ERR_SUFFIX,
    QuantityError,
    canonicalize_quantity,
    cpu_millis,
    format_quantity,
    memory_bytes,
    parse_quantity,
    quantity_format,
)


@pytest.mark.parametrize(("text", "value"), [
    ("0", Decimal(0)),
    ("1", Decimal(1)),
    ("500m", Decimal("0.5")),
    ("1.5", Decimal("1.5")),
    (".5", Decimal("0.5")),
    ("+1", Decimal(1)),
    ("-1", Decimal(-1)),
    ("100n", Decimal("0.0000001")),
    ("10u", Decimal("0.00001")),
    ("2k", Decimal(2000)),
    ("3M", Decimal(3_000_000)),
    ("1G", Decimal(10**9)),
    ("1T", Decimal(10**12)),
    ("1P", Decimal(10**15)),
    ("1E", Decimal(10**18)),
    ("1Ki", Decimal(1024)),
    ("1Mi", Decimal(2**20)),
    ("1.5Gi", Decimal(3 * 2**29)),
    ("1Ti", Decimal(2**40)),
    ("1Pi", Decimal(2**50)),
    ("1Ei", Decimal(2**60)),
    ("2e3", Decimal(2000)),
    ("2E3", Decimal(2000)),
    ("5e-3", Decimal("0.005")),
    ("1e+2", Decimal(100)),
    (" 64Mi ", Decimal(64 * 2**20)),
    (3, Decimal(3)),
    (0.25, Decimal("0.25")),
])
def test_parse_quantity(text: str | int | float, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(("text", "message"), [
    ("", ERR_FORMAT),
    ("abc", ERR_FORMAT),
    ("1x", ERR_FORMAT),
    ("1.5.5", ERR_FORMAT),
    ("1Gi2x", ERR_FORMAT),
    ("1K", ERR_SUFFIX),
    ("1KM", ERR_SUFFIX),
    ("1e", ERR_SUFFIX),
    ("1e+", ERR_SUFFIX),
    ("1Mii", ERR_SUFFIX),
    (".", ERR_NUMERIC),
    ("-", ERR_NUMERIC),
    ("Mi", ERR_NUMERIC),
    ("1e99999", ERR_NUMERIC),
])
def test_parse_quantity_errors(text: str, message: str) -> None:
    with pytest.raises(QuantityError) as e:
        parse_quantity(text)
    assert str(e.value) == message


def test_format_error_quotes_kubernetes_regex() -> None:
    with pytest.raises(ValueError, match=r"^quantities must match the regular expression "
                                         r"'\^\(\[\+-\]\?\[0-9\.\]\+\)\(\[eEinumkKMGTP\]\*\[-\+\]\?\[0-9\]\*\)\$'$"):
        parse_quantity("lots")


@pytest.mark.parametrize("bad", [True, None, [], {}, float("nan"), float("inf")])
def test_parse_quantity_rejects_non_quantities(bad: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "millis"), [
    ("500m", 500), ("1", 1000), ("0.1", 100), ("2", 2000), ("1.0001", 1001), ("1n", 1), ("250m", 250), (4, 4000),
])
def test_cpu_millis_rounds_up(text: str | int, millis: int) -> None:
    assert cpu_millis(text) == millis


@pytest.mark.parametrize(("text", "size"), [
    ("1Gi", 1073741824), ("128974848", 128974848), ("129e6", 129_000_000), ("123Mi", 128974848),
    ("1k", 1000), ("1.5", 2), ("100m", 1), ("1e100", 2**63 - 1),
])
def test_memory_bytes(text: str, size: int) -> None:
    assert memory_bytes(text) == size


def test_cpu_millis_accepts_decimal() -> None:
    assert cpu_millis(Decimal("0.25")) == 250


@pytest.mark.parametrize(("value", "fmt", "text"), [
    (Decimal("1.5"), DECIMAL_SI, "1500m"),
    (Decimal(2000), DECIMAL_SI, "2k"),
    (Decimal("0.1"), DECIMAL_SI, "100m"),
    (Decimal(0), DECIMAL_SI, "0"),
    (Decimal("0.0000000001"), DECIMAL_SI, "1n"),
    (Decimal(10**21), DECIMAL_SI, "1e21"),
    (Decimal(2**30), BINARY_SI, "1Gi"),
    (Decimal(3 * 2**29), BINARY_SI, "1536Mi"),
    (Decimal(512), BINARY_SI, "512"),
    (Decimal("0.5"), BINARY_SI, "500m"),
    (Decimal("1536.5"), BINARY_SI, "1536500m"),
    (Decimal(1000), DECIMAL_EXPONENT, "1e3"),
    (Decimal(1500), DECIMAL_EXPONENT, "1500"),
])
def test_format_quantity(value: Decimal, fmt: str, text: str) -> None:
    assert format_quantity(value, fmt) == text


@pytest.mark.parametrize(("text", "canonical", "fmt"), [
    ("0.5", "500m", DECIMAL_SI),
    ("1024Mi", "1Gi", BINARY_SI),
    ("100m", "100m", DECIMAL_SI),
    ("1e3", "1e3", DECIMAL_EXPONENT),
    ("1000", "1k", DECIMAL_SI),
    ("1.5Gi", "1536Mi", BINARY_SI),
    (2, "2", DECIMAL_SI),
])
def test_canonicalize_quantity(text: str | int, canonical: str, fmt: str) -> None:
    assert canonicalize_quantity(text) == canonical
    assert quantity_format(text) == fmt


@given(st.integers(min_value=0, max_value=2**62), st.sampled_from([DECIMAL_SI, BINARY_SI, DECIMAL_EXPONENT]))
def test_format_then_parse_is_identity_for_whole_numbers(n: int, fmt: str) -> None:
    text = format_quantity(Decimal(n), fmt)
    assert parse_quantity(text) == n
    # A BinarySI number that is no multiple of 1024 formats without a suffix ("5000", as Kubernetes'
    # Quantity.String() does); read back, a suffix-less number is DecimalSI, whose canonical form is "5k".
    assert canonicalize_quantity(text) == text or fmt == DECIMAL_EXPONENT or quantity_format(text) != fmt


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=9, allow_nan=False, allow_infinity=False))
def test_format_then_parse_is_identity_at_nano_precision(value: Decimal) -> None:
    assert parse_quantity(format_quantity(value)) == value


@given(st.text(max_size=20))
def test_parse_never_fails_with_anything_but_quantity_error(text: str) -> None:
    try:
        parse_quantity(text)
    except QuantityError:
        pass
