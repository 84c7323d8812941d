"""Name and format checks from k8s.io/apimachinery/pkg/util/validation, same messages.

Each ``is_*`` returns the list of problems (empty when valid), as the Go functions do;
callers turn each into an ``Invalid value`` cause on their own field.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable

from control_plane.api.validation.field import ErrorList

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
DNS1035_LABEL_MAX = 63
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + r"(\." + DNS1123_LABEL_FMT + ")*"
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"
CONFIG_MAP_KEY_FMT = "[-._a-zA-Z0-9]+"
ENV_VAR_NAME_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
PERCENT_FMT = "[0-9]+%"
HTTP_HEADER_NAME_FMT = "[-A-Za-z0-9]+"

_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                      "and must start and end with an alphanumeric character")
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                          "'-' or '.', and must start and end with an alphanumeric character")
_DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                      "start with an alphabetic character, and end with an alphanumeric character")
_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', "
                       "and must start and end with an alphanumeric character")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character")
_CONFIG_MAP_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
_ENV_VAR_NAME_MSG = ("a valid environment variable name must consist of alphabetic characters, digits, '_', '-', "
                     "or '.', and must not start with a digit")
_PERCENT_MSG = "a valid percent string must be a numeric string followed by an ending '%'"
_HTTP_HEADER_NAME_MSG = "a valid HTTP header must consist of alphanumeric characters or '-'"

IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def _full(fmt: str) -> re.Pattern[str]:
    # Go's ``^...$`` never matches before a trailing newline; fullmatch behaves the same.
    return re.compile(fmt)


_DNS1123_LABEL_RE = _full(DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = _full(DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE = _full(DNS1035_LABEL_FMT)
_QUALIFIED_NAME_RE = _full(QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE = _full(LABEL_VALUE_FMT)
_CONFIG_MAP_KEY_RE = _full(CONFIG_MAP_KEY_FMT)
_ENV_VAR_NAME_RE = _full(ENV_VAR_NAME_FMT)
_PERCENT_RE = _full(PERCENT_FMT)
_HTTP_HEADER_NAME_RE = _full(HTTP_HEADER_NAME_FMT)
_PORT_NAME_CHARSET_RE = _full("[-a-z0-9]+")


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    # Kubernetes' own separator is "', " + " or " — the double space is theirs.
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def inclusive_range_error(lo: int, hi: int) -> str:
    return f"must be between {lo} and {hi}, inclusive"


def _matches(pattern: re.Pattern[str], value: str) -> bool:
    return pattern.fullmatch(value) is not None


REMEMBERED = 4096  # answers kept per check
REMEMBERED_MAX_LENGTH = 256  # longer values are checked every time (and never kept)


def _remembered(check: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """``check`` with its answers remembered: the same names (label keys, namespaces,
    owner kinds) recur in every object. Each call still gets a list of its own."""
    cached = functools.lru_cache(maxsize=REMEMBERED)(lambda value: tuple(check(value)))

    @functools.wraps(check)
    def remembered(value: str) -> list[str]:
        if type(value) is str and len(value) <= REMEMBERED_MAX_LENGTH:
            return list(cached(value))
        return check(value)

    return remembered


@_remembered
def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _matches(_DNS1123_LABEL_RE, value):
        if _matches(_DNS1123_SUBDOMAIN_RE, value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(_DNS1123_LABEL_MSG, DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


@_remembered
def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _matches(_DNS1123_SUBDOMAIN_RE, value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1035_LABEL_MAX:
        errs.append(max_len_error(DNS1035_LABEL_MAX))
    if not _matches(_DNS1035_LABEL_RE, value):
        errs.append(regex_error(_DNS1035_LABEL_MSG, DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


@_remembered
def is_qualified_name(value: str) -> list[str]:
    """Label keys, annotation keys, finalizers, resource names: ``[prefix/]name``."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return ["a valid label key " + regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name",
                                                   "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _matches(_QUALIFIED_NAME_RE, name):
        errs.append("name part " + regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name",
                                               "123-abc"))
    return errs


@_remembered
def is_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(max_len_error(LABEL_VALUE_MAX))
    if not _matches(_LABEL_VALUE_RE, value):
        errs.append(regex_error(_LABEL_VALUE_MSG, LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def _chdir_prefix(value: str) -> list[str]:
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    if value.startswith(".."):
        return ["must not start with '..'"]
    return []


def is_config_map_key(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _matches(_CONFIG_MAP_KEY_RE, value):
        errs.append(regex_error(_CONFIG_MAP_KEY_MSG, CONFIG_MAP_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    return errs + _chdir_prefix(value)


def is_env_var_name(value: str) -> list[str]:
    errs = []
    if not _matches(_ENV_VAR_NAME_RE, value):
        errs.append(regex_error(_ENV_VAR_NAME_MSG, ENV_VAR_NAME_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1"))
    return errs + _chdir_prefix(value)


def is_valid_port_name(port: str) -> list[str]:
    """IANA_SVC_NAME: at most 15 of [-a-z0-9], at least one letter, no '--', no edge '-'."""
    errs = []
    if len(port) > 15:
        errs.append(max_len_error(15))
    if not _matches(_PORT_NAME_CHARSET_RE, port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_valid_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else [inclusive_range_error(1, 65535)]


def is_valid_percent(value: str) -> list[str]:
    return [] if _matches(_PERCENT_RE, value) else [regex_error(_PERCENT_MSG, PERCENT_FMT, "1%", "93%")]


def is_http_header_name(value: str) -> list[str]:
    if _matches(_HTTP_HEADER_NAME_RE, value):
        return []
    return [regex_error(_HTTP_HEADER_NAME_MSG, HTTP_HEADER_NAME_FMT, "X-Header-Name")]


# --- names of objects (apimachinery/pkg/api/validation/generic.go) ------------------------

NameFn = Callable[[str, bool], list[str]]


def _mask_trailing_dash(name: str) -> str:
    # Kubernetes replaces the last *two* characters with "a" (sic); kept for identical results.
    return name[:-2] + "a" if name.endswith("-") else name


def name_is_dns_subdomain(name: str, prefix: bool) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


# --- IP addresses ---------------------------------------------------------------------------

def parse_ip_sloppy(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """netutils.ParseIPSloppy: like Go's net.ParseIP, which tolerates leading zeros in IPv4."""
    if not value or not value.isascii() or value.strip() != value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        pass
    parts = value.split(".")
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 for p in parts):
        try:
            return ipaddress.IPv4Address(".".join(str(int(p)) for p in parts))
        except ValueError:
            return None
    return None


def is_valid_ip(value: str) -> bool:
    return parse_ip_sloppy(value) is not None


def is_valid_cidr(value: str) -> bool:
    ip, sep, bits = value.partition("/")
    if not sep or not bits.isdigit() or len(bits) > 3 or parse_ip_sloppy(ip) is None:
        return False
    max_bits = 32 if "." in ip and ":" not in ip else 128
    return int(bits) <= max_bits


def validate_ip(errs: ErrorList, value: str, path: str) -> None:
    if not is_valid_ip(value):
        errs.invalid(path, value, IP_MSG)


def validate_non_special_ip(errs: ErrorList, value: str, path: str) -> None:
    """ValidateNonSpecialIP: endpoint and external IPs may not be loopback, link-local..."""
    ip = parse_ip_sloppy(value)
    if ip is None:
        errs.invalid(path, value, "must be a valid IP address")
        return
    if ip.is_unspecified:
        errs.invalid(path, value, f"may not be unspecified ({value})")
    if ip.is_loopback:
        errs.invalid(path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)")
    if ip.is_link_local:
        errs.invalid(path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)")
    if ip in ipaddress.ip_network("224.0.0.0/24") or ip in ipaddress.ip_network("ff02::/16"):
        errs.invalid(path, value, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")


# --- labels and annotations -------------------------------------------------------------------

def validate_label_name(errs: ErrorList, name: str, path: str) -> None:
    errs.invalid_each(path, name, is_qualified_name(name))


def validate_labels(errs: ErrorList, labels: dict[str, str], path: str) -> None:
    """All errors on the map's own path, as v1validation.ValidateLabels reports them."""
    for k, v in labels.items():
        validate_label_name(errs, k, path)
        errs.invalid_each(path, v, is_label_value(v))


def validate_annotations(errs: ErrorList, annotations: dict[str, str], path: str) -> None:
    for k in annotations:
        # Annotation keys are qualified names, case-insensitively.
        errs.invalid_each(path, k, is_qualified_name(k.lower()))
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT)


def validate_dns1123_label(errs: ErrorList, value: str, path: str) -> None:
    errs.invalid_each(path, value, is_dns1123_label(value))


def validate_dns1123_subdomain(errs: ErrorList, value: str, path: str) -> None:
    errs.invalid_each(path, value, is_dns1123_subdomain(value))


def validate_qualified_name(errs: ErrorList, value: str, path: str) -> None:
    errs.invalid_each(path, value, is_qualified_name(value))


def validate_object_name(errs: ErrorList, value: str, path: str, name_fn: NameFn = name_is_dns_subdomain) -> None:
    """A reference to another object by name (configMap, secret, node...)."""
    errs.invalid_each(path, value, name_fn(value, False))


def validate_nonnegative(errs: ErrorList, value: int | None, path: str) -> None:
    if value is not None and value < 0:
        errs.invalid(path, value, "must be greater than or equal to 0")


def validate_port_num_or_name(errs: ErrorList, port: int | str | None, path: str) -> None:
    """ValidatePortNumOrName; an unset port counts as 0, as the Go zero value would."""
    if isinstance(port, str):
        errs.invalid_each(path, port, is_valid_port_name(port))
    else:
        errs.invalid_each(path, port or 0, is_valid_port_num(port or 0))

