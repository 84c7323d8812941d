"""The Deployment controller against a real ``skiff server`` (controllers replicaset,
deployment, namespace), with `FakeKubelet` playing the nodes. Rollouts are watched pod by
pod and ReplicaSet by ReplicaSet, and the bounds are asserted on every observed state;
``kubectl rollout status`` / ``undo`` / ``history`` run with the pinned 1.20 and 1.35
clients."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fake_kubelet import (
    Observer,
    controller_server,
    create_namespace,
    event_messages,
    fake_kubelet,
    is_ready,
    list_items,
    wait_for,
)

from control_plane.controllers import deployment_util as du
from skiff.client.api import ApiClient
from skiff.client.kubeconfig import load_kubeconfig

if TYPE_CHECKING:
    from tests.conftest import ApiServer

Obj = dict[str, Any]
CONTROLLERS = "replicaset,deployment,namespace"
TOOLS = Path(__file__).resolve().parents[2] / ".tools"
V1, V2, V3 = "busybox:1", "busybox:2", "busybox:3"


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with controller_server(request.config, tmp_path_factory.mktemp("deployment-server"), CONTROLLERS) as srv:
        yield srv


@pytest.fixture
async def client(server: ApiServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(server.kubeconfig)) as c:
        yield c


@pytest.fixture
async def ns(client: ApiClient, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    base = request.node.name[5:30].replace("_", "-").replace("[", "-").replace("]", "").strip("-")
    name = f"d-{base}-{uuid.uuid4().hex[:6]}".lower()
    await create_namespace(client, name)
    yield name
    await client.delete("namespaces", name)


class Kubectl:
    def __init__(self, version: str, kubeconfig: Path, workdir: Path) -> None:
        self.version = version
        self.binary = TOOLS / f"kubectl-{version}"
        if not os.access(self.binary, os.X_OK):
            pytest.skip(f"{self.binary} is missing: scripts/setup.sh fetches it")
        workdir.mkdir(parents=True, exist_ok=True)
        self.argv = [str(self.binary), "--kubeconfig", str(kubeconfig), "--cache-dir", str(workdir / "cache")]
        self.env = {**os.environ, "HOME": str(workdir)}

    async def run(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(*self.argv, *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=self.env)
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return proc.returncode or 0, out.decode(), err.decode()

    async def ok(self, *args: str, timeout: float = 60) -> str:
        code, out, err = await self.run(*args, timeout=timeout)
        assert code == 0, f"kubectl {self.version} {' '.join(args)} exited {code}\n{out}\n{err}"
        return out


@pytest.fixture
def kubectls(server: ApiServer, tmp_path: Path) -> dict[str, Kubectl]:
    return {v: Kubectl(v, server.kubeconfig, tmp_path / f"kubectl-{v}") for v in ("1.20", "1.35")}


def deployment(name: str, replicas: int, image: str = V1, **spec: Any) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}, **spec}}


def rolling(max_surge: int | str, max_unavailable: int | str) -> Obj:
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable}}


def image_of(pod: Obj) -> str:
    return str(pod["spec"]["containers"][0]["image"])


def live(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


def condition(obj: Obj, type_: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


async def set_image(client: ApiClient, ns: str, name: str, image: str) -> None:
    await client.patch("deployments", name, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": image}]}}}}, ns, patch_type="strategic")


async def complete(client: ApiClient, ns: str, name: str, image: str, timeout: float = 30) -> Obj:
    """Wait for the rollout of ``image`` to finish: status complete, every pod of it ready,
    no other pod left, Progressing NewReplicaSetAvailable."""
    async def check() -> Obj | None:
        d = await client.get("deployments", name, ns)
        want = d["spec"]["replicas"]
        status = d.get("status") or {}
        pods = await list_items(client, "pods", ns, label_selector=f"app={name}")
        progressing = condition(d, "Progressing")
        if (status.get("observedGeneration") == d["metadata"]["generation"]
                and (status.get("replicas", 0), status.get("updatedReplicas", 0),
                     status.get("availableReplicas", 0)) == (want, want, want)
                and len(pods) == want and all(is_ready(p) and image_of(p) == image for p in pods)
                and progressing is not None and progressing["reason"] == "NewReplicaSetAvailable"):
            return d
        return None
    d: Obj = await wait_for(check, timeout, f"deployment {name} to roll out {image}")
    return d


async def replica_sets(client: ApiClient, ns: str, app: str = "web") -> list[Obj]:
    return sorted(await list_items(client, "replicasets", ns, label_selector=f"app={app}"),
                  key=lambda rs: int(rs["metadata"]["annotations"].get(du.REVISION, 0)))


async def test_creates_a_hashed_replica_set_and_scales(client: ApiClient, ns: str) -> None:
    async with fake_kubelet(client, ns):
        d = await client.create("deployments", deployment("web", 3), ns)
        d = await complete(client, ns, "web", V1)
        [rs] = await replica_sets(client, ns)
        pod_hash = rs["metadata"]["labels"][du.POD_TEMPLATE_HASH]
        assert rs["metadata"]["name"] == f"web-{pod_hash}"
        assert rs["metadata"]["ownerReferences"] == [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": d["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}]
        assert rs["spec"]["selector"] == {"matchLabels": {"app": "web", du.POD_TEMPLATE_HASH: pod_hash}}
        assert rs["spec"]["template"]["metadata"]["labels"] == {"app": "web", du.POD_TEMPLATE_HASH: pod_hash}
        assert {k: v for k, v in rs["metadata"]["annotations"].items() if k.startswith("deployment.")} == {
            du.REVISION: "1", du.DESIRED_REPLICAS: "3", du.MAX_REPLICAS: "4"}
        assert d["metadata"]["annotations"][du.REVISION] == "1"
        assert pod_hash == du.compute_hash(d["spec"]["template"], None)
        assert {k: v for k, v in d["status"].items() if k != "conditions"} == {
            "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3,
            "availableReplicas": 3}
        available = condition(d, "Available")
        assert available is not None and (available["status"], available["reason"], available["message"]) == (
            "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        progressing = condition(d, "Progressing")
        assert progressing is not None and (progressing["status"], progressing["message"]) == (
            "True", f'ReplicaSet "web-{pod_hash}" has successfully progressed.')
        for pod in await list_items(client, "pods", ns, label_selector="app=web"):
            assert pod["metadata"]["labels"] == {"app": "web", du.POD_TEMPLATE_HASH: pod_hash}

        await client.patch("deployments", "web", {"spec": {"replicas": 7}}, ns, subresource="scale")
        await complete(client, ns, "web", V1)
        await client.patch("deployments", "web", {"spec": {"replicas": 2}}, ns)
        await complete(client, ns, "web", V1)
        [rs] = await replica_sets(client, ns)
        assert (rs["spec"]["replicas"], rs["metadata"]["annotations"][du.DESIRED_REPLICAS]) == (2, "2")
        messages = await event_messages(client, ns, "web", "ScalingReplicaSet")
        assert f"Scaled up replica set web-{pod_hash} from 0 to 3" in messages
        assert f"Scaled up replica set web-{pod_hash} to 7 from 3" in messages
        assert f"Scaled down replica set web-{pod_hash} to 2 from 7" in messages


@pytest.mark.parametrize("replicas,surge,unavailable,max_pods,min_ready", [
    (4, 1, 1, 5, 3),
    (5, "40%", 0, 7, 5),  # 40% of 5 = 2 surge; maxUnavailable 0: never below 5 ready
    (4, 0, "50%", 4, 2),
    (20, 3, 2, 23, 18),
], ids=["surge1-unavailable1", "surge40pct", "unavailable50pct", "20-surge3-unavailable2"])
async def test_rolling_update_stays_within_bounds_at_every_moment(
        client: ApiClient, ns: str, kubectls: dict[str, Kubectl], replicas: int, surge: int | str,
        unavailable: int | str, max_pods: int, min_ready: int) -> None:
    def pod_bounds(pods: list[Obj]) -> str | None:
        running = live(pods)
        ready = [p for p in running if is_ready(p)]
        if len(running) > max_pods:
            return f"{len(running)} pods > {max_pods}: {sorted(p['metadata']['name'] for p in running)}"
        if len(ready) < min_ready:
            return f"{len(ready)} ready pods < {min_ready}"
        return None

    def replica_set_bounds(rss: list[Obj]) -> str | None:
        total = sum(rs["spec"]["replicas"] for rs in rss)
        return f"replica sets want {total} pods > {max_pods}" if total > max_pods else None

    async with fake_kubelet(client, ns):
        await client.create("deployments", deployment("web", replicas, strategy=rolling(surge, unavailable)), ns)
        await complete(client, ns, "web", V1)
        [old] = await replica_sets(client, ns)
        async with Observer(client, "pods", ns, pod_bounds, label_selector="app=web") as pods_seen, \
                Observer(client, "replicasets", ns, replica_set_bounds) as rss_seen:
            await set_image(client, ns, "web", V2)
            status = [asyncio.create_task(k.run("-n", ns, "rollout", "status", "deployment/web", "--timeout=60s"))
                      for k in kubectls.values()]
            await complete(client, ns, "web", V2)
            results = await asyncio.gather(*status)
        assert pods_seen.events > replicas and rss_seen.events > 0
        assert not pods_seen.violations, pods_seen.violations[:5]
        assert not rss_seen.violations, rss_seen.violations[:5]
        for version, (code, out, err) in zip(kubectls, results, strict=True):
            assert code == 0, f"kubectl {version}: {out}\n{err}"
            assert 'deployment "web" successfully rolled out' in out, (version, out)
        old_again, new = await replica_sets(client, ns)
        assert old_again["metadata"]["uid"] == old["metadata"]["uid"] and old_again["spec"]["replicas"] == 0
        assert new["metadata"]["annotations"][du.REVISION] == "2"
        assert (await client.get("deployments", "web", ns))["metadata"]["annotations"][du.REVISION] == "2"
        messages = await event_messages(client, ns, "web", "ScalingReplicaSet")
        assert any(m.startswith(f"Scaled down replica set {old['metadata']['name']} to 0 from ") for m in messages)
        assert any(m.startswith(f"Scaled up replica set {new['metadata']['name']} ") for m in messages)


@pytest.mark.parametrize("version", ["1.35", "1.20"])
async def test_kubectl_rollout_undo_restores_the_old_template(client: ApiClient, ns: str,
                                                              kubectls: dict[str, Kubectl], version: str) -> None:
    kubectl = kubectls[version]
    async with fake_kubelet(client, ns):
        await client.create("deployments", deployment("web", 3), ns)
        await complete(client, ns, "web", V1)
        [first] = await replica_sets(client, ns)
        await set_image(client, ns, "web", V2)
        await complete(client, ns, "web", V2)
        out = await kubectl.ok("-n", ns, "rollout", "undo", "deployment/web")
        assert "rolled back" in out, out
        await complete(client, ns, "web", V1)
        rss = await replica_sets(client, ns)
        assert len(rss) == 2
        reused = rss[-1]
        assert reused["metadata"]["uid"] == first["metadata"]["uid"], "the old ReplicaSet is reused"
        assert reused["metadata"]["annotations"][du.REVISION] == "3"
        assert reused["metadata"]["annotations"][du.REVISION_HISTORY] == "1"
        d = await client.get("deployments", "web", ns)
        assert d["metadata"]["annotations"][du.REVISION] == "3"
        history = await kubectl.ok("-n", ns, "rollout", "history", "deployment/web")
        revisions = [line.split()[0] for line in history.splitlines() if line[:1].isdigit()]
        assert revisions == ["2", "3"], history
        code, out, err = await kubectl.run("-n", ns, "rollout", "status", "deployment/web", "--timeout=30s")
        assert code == 0 and "successfully rolled out" in out, (out, err)


async def test_recreate_never_runs_old_and_new_pods_together(client: ApiClient, ns: str,
                                                             kubectls: dict[str, Kubectl]) -> None:
    def one_version(pods: list[Obj]) -> str | None:
        # Terminating pods count: Recreate waits until old pods are really gone.
        running = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        images = {image_of(p) for p in running}
        return f"old and new pods together: {sorted(images)}" if len(images) > 1 else None

    async with fake_kubelet(client, ns):
        await client.create("deployments", deployment("web", 3, strategy={"type": "Recreate"}), ns)
        await complete(client, ns, "web", V1)
        async with Observer(client, "pods", ns, one_version, label_selector="app=web") as seen:
            await set_image(client, ns, "web", V2)
            code, out, err = await kubectls["1.35"].run("-n", ns, "rollout", "status", "deployment/web",
                                                        "--timeout=60s")
            assert code == 0, (out, err)
            await complete(client, ns, "web", V2)
        assert seen.events > 3 and not seen.violations, seen.violations[:5]
        old, new = await replica_sets(client, ns)
        assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 3)


async def test_paused_deployment_scales_but_does_not_roll_out_until_resumed(client: ApiClient, ns: str) -> None:
    async with fake_kubelet(client, ns):
        await client.create("deployments", deployment("web", 2), ns)
        await complete(client, ns, "web", V1)
        await client.patch("deployments", "web", {"spec": {"paused": True}}, ns)

        async def paused_recorded() -> Obj | None:
            d = await client.get("deployments", "web", ns)
            c = condition(d, "Progressing")
            return d if c and (c["status"], c["reason"], c["message"]) == (
                "Unknown", "DeploymentPaused", "Deployment is paused") else None
        await wait_for(paused_recorded, 10, "Progressing=Unknown DeploymentPaused")
        await set_image(client, ns, "web", V2)
        await client.patch("deployments", "web", {"spec": {"replicas": 4}}, ns)

        async def scaled_while_paused() -> bool:
            d = await client.get("deployments", "web", ns)
            pods = await list_items(client, "pods", ns, label_selector="app=web")
            return (d["status"].get("observedGeneration") == d["metadata"]["generation"]
                    and d["status"].get("availableReplicas") == 4 and len(pods) == 4)
        await wait_for(scaled_while_paused, 20, "4 pods while paused")
        assert len(await replica_sets(client, ns)) == 1, "no new ReplicaSet while paused"
        assert {image_of(p) for p in await list_items(client, "pods", ns, label_selector="app=web")} == {V1}

        await client.patch("deployments", "web", {"spec": {"paused": False}}, ns)
        d = await complete(client, ns, "web", V2)
        assert d["spec"]["replicas"] == 4 and len(await replica_sets(client, ns)) == 2


async def test_revision_history_limit_deletes_the_oldest_replica_sets(client: ApiClient, ns: str) -> None:
    async with fake_kubelet(client, ns):
        await client.create("deployments", deployment("web", 2, revisionHistoryLimit=1), ns)
        await complete(client, ns, "web", V1)
        for image in (V2, V3, "busybox:4"):
            await set_image(client, ns, "web", image)
            await complete(client, ns, "web", image)

        async def pruned() -> list[Obj] | None:
            rss = await replica_sets(client, ns)
            return rss if len(rss) == 2 else None
        old, new = await wait_for(pruned, 10, "old replica sets beyond the limit to be deleted")
        assert [old["metadata"]["annotations"][du.REVISION], new["metadata"]["annotations"][du.REVISION]] \
            == ["3", "4"]
        assert old["spec"]["template"]["spec"]["containers"][0]["image"] == V3


async def test_progress_deadline_exceeded_then_recovers(client: ApiClient, ns: str,
                                                        kubectls: dict[str, Kubectl]) -> None:
    async with fake_kubelet(client, ns, ready=False) as kubelet:
        await client.create("deployments", deployment("web", 2, progressDeadlineSeconds=2), ns)

        async def timed_out() -> Obj | None:
            d = await client.get("deployments", "web", ns)
            c = condition(d, "Progressing")
            return d if c and c["reason"] == "ProgressDeadlineExceeded" else None
        d = await wait_for(timed_out, 15, "Progressing=False ProgressDeadlineExceeded")
        progressing, available = condition(d, "Progressing"), condition(d, "Available")
        assert progressing is not None and progressing["status"] == "False"
        assert progressing["message"].endswith("has timed out progressing.")
        assert available is not None and (available["status"], available["reason"]) == (
            "False", "MinimumReplicasUnavailable")
        assert d["status"]["unavailableReplicas"] == 2
        for version, kubectl in kubectls.items():
            code, out, err = await kubectl.run("-n", ns, "rollout", "status", "deployment/web", "--timeout=20s")
            assert code != 0 and 'deployment "web" exceeded its progress deadline' in err, (version, out, err)

        kubelet.set_ready(True)
        await complete(client, ns, "web", V1)


async def test_adopts_an_orphan_replica_set_and_releases_one_that_stops_matching(client: ApiClient,
                                                                                  ns: str) -> None:
    async with fake_kubelet(client, ns):
        template = deployment("web", 3)["spec"]
        await client.create("replicasets", {
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "legacy", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": template["selector"], "template": template["template"]}}, ns)
        d = await client.create("deployments", deployment("web", 3), ns)
        await complete(client, ns, "web", V1)
        [rs] = await replica_sets(client, ns)
        assert rs["metadata"]["name"] == "legacy", "the matching orphan is adopted, not replaced"
        assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
        assert rs["spec"]["replicas"] == 3 and rs["metadata"]["annotations"][du.REVISION] == "1"

        await client.patch("replicasets", "legacy", {"metadata": {"labels": {"app": "retired"}}}, ns)

        async def released() -> bool:
            legacy = await client.get("replicasets", "legacy", ns)
            return not legacy["metadata"].get("ownerReferences")
        await wait_for(released, 10, "legacy to be released")

        async def replaced() -> list[Obj] | None:
            rss = [rs for rs in await replica_sets(client, ns) if rs["metadata"]["name"] != "legacy"]
            ready = [rs for rs in rss if (rs.get("status") or {}).get("readyReplicas") == 3]
            return ready or None
        [new] = await wait_for(replaced, 20, "a new ReplicaSet for the deployment")
        assert new["metadata"]["name"].startswith("web-")


async def test_scaling_mid_rollout_is_proportional(client: ApiClient, ns: str) -> None:
    async with fake_kubelet(client, ns) as kubelet:
        kubelet.set_ready(lambda pod: image_of(pod) == V1)
        await client.create("deployments", deployment("web", 10, strategy=rolling(3, 2)), ns)
        await complete(client, ns, "web", V1)
        await set_image(client, ns, "web", V2)

        async def sizes(want: tuple[int, int]) -> tuple[int, int] | None:
            rss = await replica_sets(client, ns)
            got = tuple(rs["spec"]["replicas"] for rs in rss)
            return want if len(rss) == 2 and got == want else None
        # Stuck mid-rollout: old 10-2 = 8 (maxUnavailable 2), new up to 13-8 = 5 (maxSurge 3), none ready.
        await wait_for(lambda: sizes((8, 5)), 20, "old 8 / new 5")
        await client.patch("deployments", "web", {"spec": {"replicas": 20}}, ns)
        # 10 more to spread (20 + 3 - 13): old 8 * 23/13 = 14.2 -> 14, new 5 * 23/13 = 8.8 -> 9.
        await wait_for(lambda: sizes((14, 9)), 20, "old 14 / new 9 after proportional scaling")
        kubelet.set_ready(True)
        await complete(client, ns, "web", V2)


# ---- the arithmetic, without a server -------------------------------------------------

def test_fenceposts_round_surge_up_and_unavailable_down() -> None:
    assert du.resolve_fenceposts("25%", "25%", 10) == (3, 2)
    assert du.resolve_fenceposts("1%", "1%", 10) == (1, 0)
    assert du.resolve_fenceposts(0, "10%", 5) == (0, 1)  # both zero after rounding: one may go
    d = deployment("x", 4, strategy=rolling("50%", "50%"))
    assert (du.max_surge(d), du.max_unavailable(d)) == (2, 2)
    recreate = deployment("x", 4, strategy={"type": "Recreate"})
    assert (du.max_surge(recreate), du.max_unavailable(recreate)) == (0, 0)


def test_template_hash_is_stable_and_ignores_empty_fields() -> None:
    template = deployment("x", 1)["spec"]["template"]
    same = {**template, "spec": {**template["spec"], "volumes": []}}
    assert du.compute_hash(template, None) == du.compute_hash(same, None)
    assert du.compute_hash(template, None) != du.compute_hash(template, 1)
    assert set(du.compute_hash(template, None)) <= set("456789bcdf")  # decimal digits, encoded
    assert du.safe_encode_string("0123456789") == "456789bcdf"
    labelled = {**template, "metadata": {"labels": {"app": "x", du.POD_TEMPLATE_HASH: "abc"}}}
    assert du.equal_ignore_hash(template, labelled)
