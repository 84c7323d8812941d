"""A small asyncio client for etcd's v3 API through its JSON gateway (``/v3/...``).

Only what the store needs: range, txn, compaction and watch. Requests go to one
endpoint at a time and fail over to the next when it cannot be reached. A request is
tried again (on the next endpoint, with a short backoff, until ``retry_timeout``) only
when it is certain it did not take effect: the connection was refused, or etcd
answered that it has no leader or dropped the proposal. Reads are idempotent, so they
are also retried after errors that leave a write's outcome unknown (a connection
broken mid-request, a timeout); a write that meets one of those fails with
``EtcdUnavailableError`` and the caller decides, as with any store error.

Wire format (grpc-gateway's JSON mapping of etcd's protobufs): bytes fields are base64,
int64 fields are decimal strings, fields holding their zero value are left out, and a
streamed reply (watch) is one ``{"result": ...}`` JSON document per line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from control_plane.storage.interface import StoreError

log = logging.getLogger(__name__)

# grpc status codes etcd answers with (in the gateway's "code" field)
GRPC_DEADLINE_EXCEEDED = 4
GRPC_OUT_OF_RANGE = 11
GRPC_UNAVAILABLE = 14

# Errors after which etcd surely did not apply a request, so trying it again elsewhere is safe.
NOT_APPLIED = ("etcdserver: no leader", "raft proposal dropped", "etcdserver: not capable",
               "etcdserver: too many requests")
# Errors a read can be retried after (it may have reached a member that lost its leader).
TRANSIENT = (*NOT_APPLIED, "etcdserver: leader changed", "etcdserver: request timed out",
             "etcdserver: request timed out, possibly due to previous leader failure",
             "etcdserver: request timed out, possibly due to connection lost")

COMPACTED_MESSAGE = "mvcc: required revision has been compacted"
FUTURE_MESSAGE = "mvcc: required revision is a future revision"


class EtcdError(StoreError):
    """etcd answered the request with an error."""

    def __init__(self, code: int, message: str, endpoint: str):
        super().__init__(f"etcd {endpoint}: {message} (grpc code {code})")
        self.code = code
        self.message = message
        self.endpoint = endpoint

    @property
    def compacted(self) -> bool:
        return COMPACTED_MESSAGE in self.message

    @property
    def future_revision(self) -> bool:
        return FUTURE_MESSAGE in self.message

    @property
    def not_applied(self) -> bool:
        return any(m in self.message for m in NOT_APPLIED)

    @property
    def transient(self) -> bool:
        return self.code in (GRPC_UNAVAILABLE, GRPC_DEADLINE_EXCEEDED) or any(m in self.message for m in TRANSIENT)


class EtcdUnavailableError(StoreError):
    """No endpoint gave an answer in time (or a write's outcome is unknown)."""


def error_from(reply: dict[str, Any], endpoint: str) -> EtcdError:
    """The error of a gateway reply: ``{"error": "...", "code": N}`` for a unary call,
    ``{"error": {"grpc_code": N, "message": "..."}}`` in (or instead of) a stream."""
    error = reply.get("error")
    if isinstance(error, dict):
        return EtcdError(int(error.get("grpc_code", 0)), str(error.get("message", error)), endpoint)
    return EtcdError(int(reply.get("code", 0)), str(error or reply.get("message", reply)), endpoint)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_range_end(prefix: bytes) -> bytes:
    """The range_end that makes a range cover every key starting with ``prefix``
    (etcd's GetPrefixRangeEnd); b"\\0" means "to the end of the keyspace"."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


@dataclass(frozen=True)
class EtcdKV:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> EtcdKV:
        return cls(unb64(kv.get("key")), unb64(kv.get("value")), int(kv.get("create_revision", 0)),
                   int(kv.get("mod_revision", 0)), int(kv.get("version", 0)))


@dataclass(frozen=True)
class RangeResult:
    revision: int  # the store's revision when the range was served (not the one asked for)
    kvs: list[EtcdKV]
    more: bool


def header_revision(reply: dict[str, Any]) -> int:
    return int(reply.get("header", {}).get("revision", 0))


@dataclass
class TlsFiles:
    """Client TLS to etcd: the CA that signed etcd's serving certificates and, when etcd
    runs with --client-cert-auth, this client's certificate and key."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


class EtcdClient:
    def __init__(self, endpoints: Sequence[str], *, tls: TlsFiles | None = None, request_timeout: float = 10.0,
                 retry_timeout: float = 5.0, dial_timeout: float = 2.0, max_connections: int = 128):
        if not endpoints:
            raise ValueError("no etcd endpoints given")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self._tls = tls
        self._request_timeout = request_timeout
        self._retry_timeout = retry_timeout
        self._dial_timeout = dial_timeout
        self._max_connections = max_connections
        self._current = 0  # index of the endpoint requests go to first
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        ssl_context: ssl.SSLContext | bool = True
        if self._tls is not None or any(e.startswith("https://") for e in self.endpoints):
            ssl_context = (self._tls or TlsFiles()).context()
        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=ssl_context, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(connector=connector, json_serialize=json.dumps)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def _failed(self, index: int, reason: str) -> None:
        """Move on from endpoint ``index`` (unless another request already did)."""
        if index == self._current and len(self.endpoints) > 1:
            self._current = (index + 1) % len(self.endpoints)
            log.warning("etcd %s failed (%s); next requests go to %s", self.endpoints[index], reason, self.endpoint)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise StoreError("etcd client is not started or already closed")
        return self._session

    # ---- unary calls ---------------------------------------------------------

    async def call(self, path: str, body: dict[str, Any], *, idempotent: bool) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>``, failing over as the module docstring says."""
        session = self._http()
        started = time.monotonic()
        retry_until = started + self._retry_timeout
        deadline = started + self._request_timeout
        delay = 0.05
        failures: list[str] = []
        while True:
            for _ in range(len(self.endpoints)):
                index = self._current
                endpoint = self.endpoints[index]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                timeout = aiohttp.ClientTimeout(total=remaining, sock_connect=min(self._dial_timeout, remaining))
                try:
                    async with session.post(f"{endpoint}/v3/{path}", json=body, timeout=timeout) as resp:
                        reply = await resp.json(content_type=None)
                except aiohttp.ClientConnectorError as exc:  # never sent
                    failures.append(f"{endpoint}: {exc.os_error or exc}")
                    self._failed(index, "cannot connect")
                    continue
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    failures.append(f"{endpoint}: {reason}")
                    self._failed(index, reason)
                    if idempotent:
                        continue
                    raise EtcdUnavailableError(f"etcd {endpoint}: {reason}; the outcome of the write is unknown"
                                               ) from exc
                if resp.status == 200:
                    result: dict[str, Any] = reply
                    return result
                error = error_from(reply, endpoint)
                if error.not_applied or (idempotent and error.transient):
                    failures.append(f"{endpoint}: {error.message}")
                    self._failed(index, error.message)
                    continue
                if error.transient:  # e.g. a write timed out on a member cut off from the leader
                    self._failed(index, error.message)
                raise error
            now = time.monotonic()
            if now >= min(retry_until, deadline):
                break
            await asyncio.sleep(min(delay, retry_until - now))
            delay = min(delay * 2, 0.5)
        tried = "; ".join(dict.fromkeys(failures[-2 * len(self.endpoints):])) or "no time left"
        raise EtcdUnavailableError(f"no etcd endpoint answered {path} within "
                                   f"{time.monotonic() - started:.1f}s: {tried}")

    async def range(self, key: bytes, range_end: bytes = b"", *, revision: int = 0, limit: int = 0,
                    count_only: bool = False, serializable: bool = False) -> RangeResult:
        body: dict[str, Any] = {"key": b64(key)}
        if range_end:
            body["range_end"] = b64(range_end)
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        if count_only:
            body["count_only"] = True
        if serializable:
            body["serializable"] = True
        reply = await self.call("kv/range", body, idempotent=True)
        kvs = [EtcdKV.from_json(kv) for kv in reply.get("kvs", ())]
        return RangeResult(header_revision(reply), kvs, bool(reply.get("more", False)))

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.call("kv/txn", {"compare": compare, "success": success, "failure": failure},
                               idempotent=False)

    async def compact(self, revision: int) -> dict[str, Any]:
        # Compacting twice to the same revision answers "compacted": retrying is harmless.
        return await self.call("kv/compaction", {"revision": str(revision)}, idempotent=True)

    # ---- watch ---------------------------------------------------------------

    @asynccontextmanager
    async def watch(self, key: bytes, range_end: bytes, start_revision: int, *,
                    prev_kv: bool = False) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """One etcd watch, open once etcd confirmed it; yields an iterator over its
        replies (each a WatchResponse: ``events``, ``compact_revision``, ``canceled``...).

        The watch requires a leader (``hasleader`` metadata, as clientv3's
        WithRequireLeader): a member cut off from the majority ends it rather than
        leaving it silent. A broken stream raises EtcdUnavailableError; the caller
        watches again from the revision after the last one it received."""
        session = self._http()
        body = {"create_request": {"key": b64(key), "range_end": b64(range_end),
                                   "start_revision": str(start_revision), "prev_kv": prev_kv}}
        headers = {"Grpc-Metadata-hasleader": "true"}
        failures: list[str] = []
        for _ in range(len(self.endpoints)):
            index = self._current
            endpoint = self.endpoints[index]
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._dial_timeout)
            try:
                resp = await session.post(f"{endpoint}/v3/watch", json=body, headers=headers, timeout=timeout)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"{endpoint}: {exc}")
                self._failed(index, str(exc) or type(exc).__name__)
                continue
            replies = _stream_replies(resp, endpoint)
            try:
                try:
                    async with asyncio.timeout(self._request_timeout):
                        first = await anext(replies)
                except (StopAsyncIteration, TimeoutError, EtcdUnavailableError) as exc:
                    failures.append(f"{endpoint}: {exc or 'watch was not confirmed'}")
                    self._failed(index, str(exc) or "watch was not confirmed")
                    continue
                except EtcdError as exc:
                    if not exc.transient:
                        raise
                    failures.append(f"{endpoint}: {exc.message}")  # e.g. this member has no leader
                    self._failed(index, exc.message)
                    continue
                if not first.get("created"):
                    raise EtcdUnavailableError(f"etcd {endpoint}: unexpected first watch reply {first}")
                if first.get("canceled"):
                    raise EtcdError(0, str(first.get("cancel_reason", "watch canceled")), endpoint)
                yield replies
                return
            finally:
                await replies.aclose()
                resp.close()
        raise EtcdUnavailableError(f"cannot open an etcd watch: {'; '.join(failures)}")


async def _stream_replies(resp: aiohttp.ClientResponse, endpoint: str) -> AsyncGenerator[dict[str, Any], None]:
    """The ``result`` of each line of a streamed gateway reply."""
    if resp.status != 200:
        text = await resp.text()
        try:
            reply = json.loads(text)
        except ValueError:
            raise EtcdUnavailableError(f"etcd {endpoint}: watch answered HTTP {resp.status}: {text[:200]}") from None
        raise error_from(reply, endpoint)
    buffer = bytearray()
    try:
        while True:
            chunk = await resp.content.readany()
            if not chunk:
                raise EtcdUnavailableError(f"etcd {endpoint}: watch stream ended")
            buffer += chunk
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                line = bytes(buffer[start:end])
                start = end + 1
                if not line.strip():
                    continue
                message = json.loads(line)
                if "error" in message:
                    raise error_from(message, endpoint)
                yield message.get("result", {})
            del buffer[:start]
    except (aiohttp.ClientError, ValueError) as exc:
        raise EtcdUnavailableError(f"etcd {endpoint}: watch stream broke: {type(exc).__name__}: {exc}") from exc
