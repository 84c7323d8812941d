"""The ServiceAccount controller against a real API server running only it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hollow import controller_server, create_namespace, fresh_namespace, get_or_none, ok

if TYPE_CHECKING:
    from tests.conftest import ApiServer


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with controller_server(request.config, tmp_path_factory.mktemp("sa-server"), "serviceaccount") as srv:
        yield srv


def default_sa(server: ApiServer, ns: str) -> dict[str, Any] | None:
    return get_or_none(server, f"/api/v1/namespaces/{ns}/serviceaccounts/default")


def test_every_namespace_gets_a_default_service_account(server: ApiServer, request: pytest.FixtureRequest,
                                                        wait_until: Callable[..., Any]) -> None:
    for existing in ("default", "kube-system"):
        wait_until(lambda: default_sa(server, existing), 10, f"the default service account in {existing}")  # noqa: B023
    ns = fresh_namespace(server, request)
    first = wait_until(lambda: default_sa(server, ns), 10, "the default service account in a new namespace")
    ok(server.delete(f"/api/v1/namespaces/{ns}/serviceaccounts/default"))
    again = wait_until(lambda: default_sa(server, ns), 10, "the deleted default service account to come back")
    assert again["metadata"]["uid"] != first["metadata"]["uid"]


def test_terminating_namespaces_get_none(server: ApiServer, request: pytest.FixtureRequest,
                                         wait_until: Callable[..., Any]) -> None:
    ns = fresh_namespace(server, request)
    wait_until(lambda: default_sa(server, ns), 10, "the default service account")
    # Without the namespace controller the namespace stays Terminating.
    ok(server.delete(f"/api/v1/namespaces/{ns}"))
    ok(server.delete(f"/api/v1/namespaces/{ns}/serviceaccounts/default"))
    marker = create_namespace(server, f"{ns[:50]}-later")
    wait_until(lambda: default_sa(server, marker), 10, "a later namespace's account (the controller caught up)")
    assert default_sa(server, ns) is None, "a terminating namespace gets no new service account"
