"""Claiming objects by selector, as Kubernetes' ControllerRefManager does.

A controller (a ReplicaSet claiming pods, a Deployment claiming ReplicaSets) owns the
objects whose controller reference names its UID. `ControllerRefManager.claim` walks the
candidates of its namespace and:

* keeps what it owns and its selector still matches;
* releases what it owns but no longer matches (removes its ownerReference), unless the
  owner itself is being deleted;
* adopts orphans that match and are not being deleted (adds a controller reference with
  ``controller: true, blockOwnerDeletion: true``), after checking once, with a fresh
  read, that the owner still exists under the same UID and is not being deleted;
* ignores what another controller owns.

Both patches are strategic merge patches carrying the object's UID, so they fail rather
than touch a namesake created meanwhile. Errors are collected; the first is raised after
every candidate was tried, so one stubborn object does not block the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from control_plane.controllers.workload_pods import controller_of, controller_reference, meta
from skiff.api.selectors import LabelSelector
from skiff.client.api import ApiClient
from skiff.client.errors import ApiClientError, Invalid, NotFound

log = logging.getLogger(__name__)

Obj = dict[str, Any]
CanAdopt = Callable[[], Awaitable[None]]


def owner_recheck(client: ApiClient, resource: str, owner: Mapping[str, Any]) -> CanAdopt:
    """controller.RecheckDeletionTimestamp: before adopting, re-read the owner (uncached)
    and refuse if it is gone, replaced by a namesake, or being deleted."""
    md = meta(owner)

    async def check() -> None:
        fresh = await client.get(resource, str(md.get("name")), md.get("namespace"))
        fresh_md = meta(fresh)
        if fresh_md.get("uid") != md.get("uid"):
            raise ApiClientError(f"original {resource} {md.get('namespace')}/{md.get('name')} is gone: "
                                 f"got uid {fresh_md.get('uid')}, wanted {md.get('uid')}")
        if fresh_md.get("deletionTimestamp"):
            raise ApiClientError(f"{md.get('namespace')}/{md.get('name')} has just been deleted at "
                                 f"{fresh_md['deletionTimestamp']}")
    return check


class ControllerRefManager:
    def __init__(self, client: ApiClient, owner: Mapping[str, Any], api_version: str, kind: str,
                 selector: LabelSelector, can_adopt: CanAdopt) -> None:
        self.client = client
        self.owner = owner
        self.ref = controller_reference(owner, api_version, kind)
        self.selector = selector
        self._can_adopt = can_adopt
        self._adopt_checked: ApiClientError | bool = False

    @property
    def owner_deleting(self) -> bool:
        return bool(meta(self.owner).get("deletionTimestamp"))

    async def claim(self, resource: str, candidates: Iterable[Obj],
                    match: Callable[[Obj], bool] | None = None) -> list[Obj]:
        """The candidates this owner controls after adopting and releasing (see module doc).
        Adopted objects are returned as the server answered the patch."""
        claimed: list[Obj] = []
        errors: list[ApiClientError] = []
        owner_uid = self.ref["uid"]
        for obj in candidates:
            matches = self.selector.matches(meta(obj).get("labels") or {}) and (match is None or match(obj))
            ref = controller_of(obj)
            try:
                if ref is not None:
                    if ref.get("uid") != owner_uid:
                        continue  # another controller's
                    if matches:
                        claimed.append(obj)
                    elif not self.owner_deleting:
                        await self.release(resource, obj)
                    continue
                if self.owner_deleting or not matches or meta(obj).get("deletionTimestamp"):
                    continue
                if meta(obj).get("namespace") != meta(self.owner).get("namespace"):
                    continue
                adopted = await self.adopt(resource, obj)
                if adopted is not None:
                    claimed.append(adopted)
            except ApiClientError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return claimed

    async def _check_can_adopt(self) -> None:
        if self._adopt_checked is True:
            return
        if isinstance(self._adopt_checked, ApiClientError):
            raise self._adopt_checked
        try:
            await self._can_adopt()
            self._adopt_checked = True
        except ApiClientError as exc:
            self._adopt_checked = exc
            raise

    async def adopt(self, resource: str, obj: Obj) -> Obj | None:
        md = meta(obj)
        try:
            await self._check_can_adopt()
        except ApiClientError as exc:
            raise ApiClientError(f"can't adopt {resource} {md.get('namespace')}/{md.get('name')} "
                                 f"({md.get('uid')}): {exc}") from exc
        patch = {"metadata": {"ownerReferences": [self.ref], "uid": md.get("uid")}}
        try:
            adopted = await self.client.patch(resource, str(md.get("name")), patch, md.get("namespace"),
                                              patch_type="strategic")
        except NotFound:
            return None
        log.info("%s %s/%s adopted by %s %s", resource, md.get("namespace"), md.get("name"),
                 self.ref["kind"], self.ref["name"])
        return adopted

    async def release(self, resource: str, obj: Obj) -> None:
        md = meta(obj)
        patch = {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": self.ref["uid"]}],
                              "uid": md.get("uid")}}
        try:
            await self.client.patch(resource, str(md.get("name")), patch, md.get("namespace"),
                                    patch_type="strategic")
        except (NotFound, Invalid):
            return  # gone, or no longer ours / a namesake: nothing to release
        log.info("%s %s/%s released by %s %s (labels no longer match)", resource, md.get("namespace"),
                 md.get("name"), self.ref["kind"], self.ref["name"])
