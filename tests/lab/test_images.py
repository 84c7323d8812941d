"""Skiff's images on the host's real Docker Engine, under test-only tags that are removed afterwards.

Containers run with ``--network none`` (or join such a container's namespace), so the only
traffic is on a loopback inside a container this test created.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from node_agent.images.build import CONTENT_LABEL, ImageSpec, ensure_image, ensure_images, lab_image_specs

docker = pytest.importorskip("docker")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for the Docker Engine"),
    pytest.mark.skipif(shutil.which("gcc") is None or not os.path.exists("/bin/busybox"),
                       reason="needs gcc and busybox-static to build the images"),
]

STOP_PROMPTLY = 3.0  # seconds: pause must not wait for docker's SIGKILL (10 s)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    try:
        c = docker.from_env()
        c.ping()
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker Engine on this host: {exc}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def run_id() -> str:
    return secrets.token_hex(3)


@pytest.fixture(scope="module")
def images(client: Any, run_id: str) -> Iterator[dict[str, ImageSpec]]:
    """The lab images under tags of this run: ``skiff/pause:test-<id>``, ``skiff/app:test-<id>``."""
    specs = {spec.repository.split("/")[1]: spec.with_tag(f"{spec.repository}:test-{run_id}")
             for spec in lab_image_specs()}
    try:
        ensure_images(client, list(specs.values()))
        yield specs
    finally:
        for container in client.containers.list(all=True, filters={"label": f"io.skiff.test={run_id}"}):
            container.remove(force=True)
        for spec in specs.values():
            try:
                client.images.remove(spec.tag, force=True)
            except docker.errors.ImageNotFound:
                pass


def run(client: Any, run_id: str, image: str, command: Any = None, **kw: Any) -> Any:
    kw.setdefault("network_mode", "none")
    return client.containers.run(image, command, detach=True, labels={"io.skiff.test": run_id}, **kw)


def wait_status(container: Any, status: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        if container.status == status:
            return
        assert time.monotonic() < deadline, f"container {container.short_id} is {container.status}, not {status}"
        time.sleep(0.05)


def test_ensure_is_idempotent_and_labels_content(client: Any, images: dict[str, ImageSpec]) -> None:
    assert ensure_images(client, list(images.values())) == [(s.tag, False) for s in images.values()]
    for spec in images.values():
        labels = client.api.inspect_image(spec.tag)["Config"]["Labels"]
        assert labels[CONTENT_LABEL] == spec.content_digest


def test_changed_content_is_reimported(client: Any, images: dict[str, ImageSpec], run_id: str) -> None:
    base = images["pause"]
    spec = base.with_tag(f"skiff/pause:test-{run_id}-b")
    try:
        assert ensure_image(client, spec) is True
        changed = ImageSpec(spec.tag, spec.rootfs, (*spec.changes, "ENV CHANGED=1"))
        assert ensure_image(client, changed) is True
        assert client.api.inspect_image(spec.tag)["Config"]["Labels"][CONTENT_LABEL] == changed.content_digest
        assert ensure_image(client, changed) is False
    finally:
        client.images.remove(spec.tag, force=True)


def test_pause_image_config(client: Any, images: dict[str, ImageSpec]) -> None:
    config = client.api.inspect_image(images["pause"].tag)["Config"]
    assert config["Entrypoint"] == ["/pause"]


@pytest.mark.parametrize("signal", ["SIGTERM", "SIGINT"])
def test_pause_exits_0_promptly_on_signal(client: Any, images: dict[str, ImageSpec], run_id: str,
                                          signal: str) -> None:
    container = run(client, run_id, images["pause"].tag)
    wait_status(container, "running")
    start = time.monotonic()
    container.kill(signal=signal)
    result = container.wait(timeout=10)
    elapsed = time.monotonic() - start
    assert result["StatusCode"] == 0
    assert elapsed < STOP_PROMPTLY, f"pause took {elapsed:.1f}s to exit on {signal}"


def test_pause_reaps_orphans(client: Any, images: dict[str, ImageSpec], run_id: str) -> None:
    """A child orphaned in the pod's PID namespace is reparented to pause, which must reap it."""
    pause = run(client, run_id, images["pause"].tag)
    wait_status(pause, "running")
    # The inner shell exits at once, orphaning its background sleep; once sleep exits, nothing but pause
    # can reap it. Then list every process of the namespace with its state.
    script = ('sh -c "sleep 0.3 &"; sleep 1.5; '
              'for f in /proc/[0-9]*/stat; do cat "$f" 2>/dev/null; echo; done')
    probe = run(client, run_id, images["app"].tag, ["sh", "-c", script], network_mode=f"container:{pause.id}",
                pid_mode=f"container:{pause.id}")
    assert probe.wait(timeout=30)["StatusCode"] == 0
    stats = [line for line in probe.logs().decode().splitlines() if line.strip()]
    states = {line.split(")")[0].split("(")[1]: line.split(")")[1].split()[0] for line in stats}
    assert "pause" in states, stats
    assert "Z" not in states.values(), f"zombies left: {stats}"


def test_app_image_userland(client: Any, images: dict[str, ImageSpec], run_id: str) -> None:
    script = "id -un; stat -c %a /tmp; grep -c . /etc/passwd; for a in sh httpd wget nslookup sleep cat; " \
             "do which $a; done"
    container = run(client, run_id, images["app"].tag, ["sh", "-c", script])
    assert container.wait(timeout=30)["StatusCode"] == 0
    lines = container.logs().decode().split()
    assert lines[:3] == ["root", "1777", "2"]
    assert len(lines[3:]) == 6 and all(path.startswith("/") for path in lines[3:])
    assert client.api.inspect_image(images["app"].tag)["Config"]["Cmd"] == ["sh"]


def test_app_serves_http_to_a_neighbour_container(client: Any, images: dict[str, ImageSpec], run_id: str) -> None:
    server = run(client, run_id, images["app"].tag, ["httpd", "-f", "-p", "8080", "-h", "/var/www"])
    wait_status(server, "running")
    # Polls until httpd listens (bounded: 100 tries, 0.1 s apart), on the shared loopback only.
    # (No `wget -T`: it segfaults in Debian's static busybox 1.35.)
    script = "for i in $(seq 100); do wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1"
    client_container = run(client, run_id, images["app"].tag, ["sh", "-c", script],
                           network_mode=f"container:{server.id}")
    assert client_container.wait(timeout=60)["StatusCode"] == 0, client_container.logs().decode()
    assert "Hello from skiff/app" in client_container.logs().decode()
