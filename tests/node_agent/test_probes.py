"""Probes: single runs against a local aiohttp server on 127.0.0.1, and the prober worker's
threshold rules on a fake clock."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node_agent.probes import ProbeResult, ProbeWorker, resolve_port, run_probe
from tests_helpers_unused import *  # noqa: F401,F403  # placeholder removed below
