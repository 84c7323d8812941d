"""Authentication: bearer tokens from a static token file, as kube-apiserver's
``--token-auth-file`` (CSV: ``token,user,uid,"group1,group2"``)."""

from __future__ import annotations

import csv
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ANONYMOUS_PATHS = ("/healthz", "/livez", "/readyz", "/version")


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str
    groups: tuple[str, ...] = field(default=())


class TokenAuthenticator:
    def __init__(self, tokens: dict[str, UserInfo]):
        self._tokens = tokens

    @classmethod
    def from_file(cls, path: Path) -> TokenAuthenticator:
        tokens: dict[str, UserInfo] = {}
        with path.open(newline="") as f:
            for row in csv.reader(f):
                if not row or row[0].startswith("#") or len(row) < 3:
                    continue
                groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else []) if g)
                tokens[row[0]] = UserInfo(row[1], row[2], groups + ("system:authenticated",))
        return cls(tokens)

    def authenticate(self, authorization: str | None) -> UserInfo | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        presented = authorization[len("Bearer "):].strip()
        for token, user in self._tokens.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                return user
        return None


def is_anonymous_path(path: str) -> bool:
    if not path.startswith(ANONYMOUS_PATHS):  # one call for the common case: every other request
        return False
    return any(path == p or path.startswith(p + "/") for p in ANONYMOUS_PATHS)


def ensure_token_file(path: Path) -> str:
    """Create the token file with an admin token (group system:masters) unless it
    exists; returns the admin token."""
    if path.exists():
        for row in csv.reader(path.open(newline="")):
            if len(row) >= 2 and row[1] == "admin":
                return row[0]
        raise ValueError(f"{path} has no token for user admin")
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", newline="") as f:
        csv.writer(f).writerow([token, "admin", "admin", "system:masters"])
    return token
