"""The ``skiff image`` command: ``build`` Skiff's images into a Docker Engine, ``load`` local
images into every node of a lab (as ``kind load docker-image`` does)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from node_agent.images.errors import ImageBuildError


def add_image_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    image = subparsers.add_parser("image", help="build Skiff's images; copy local images into a lab's nodes")
    image.set_defaults(func=lambda _args: (image.print_help(sys.stderr), 1)[1])
    sub = image.add_subparsers(dest="image_command", metavar="COMMAND")

    build = sub.add_parser("build", help="build skiff/pause:1.0 and skiff/app:1.0 into a Docker Engine")
    build.add_argument("--docker-host", default=None,
                       help="the Engine to import into (default: $DOCKER_HOST or the local socket)")
    build.set_defaults(func=cmd_build)

    load = sub.add_parser("load", help="copy images from the local Docker Engine into every node of a lab")
    load.add_argument("images", nargs="+", metavar="IMAGE")
    load.add_argument("--lab", default="skiff", help="the lab's name (default skiff)")
    load.add_argument("--state-dir", type=Path, default=None, help="the lab's state dir, if not the default")
    load.add_argument("--docker-host", default=None,
                      help="the Engine to copy from (default: $DOCKER_HOST or the local socket)")
    load.set_defaults(func=cmd_load)


def source_client(docker_host: str | None) -> Any:
    import docker

    try:
        if docker_host:
            return docker.DockerClient(base_url=docker_host)
        return docker.from_env()
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"cannot reach the Docker Engine {docker_host or '(default)'}: {exc}") from exc


def cmd_build(args: argparse.Namespace) -> int:
    from node_agent.images.build import ensure_images

    try:
        client = source_client(args.docker_host)
        with contextlib.closing(client):
            for tag, imported in ensure_images(client):
                print(f"{tag}: {'imported' if imported else 'up to date'}")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from node_agent.images.transfer import copy_images
    from node_agent.lab import dockerd
    from node_agent.lab.layout import LabError
    from node_agent.lab.state import load_state, resolve_state_dir

    try:
        state = load_state(resolve_state_dir(args.lab, args.state_dir))
        if state is None:
            raise ImageBuildError(f"lab {args.lab} does not exist: run `skiff lab up --name {args.lab}` first")
        down = [n.name for n in state.nodes if not dockerd.ping(n.docker_host)]
        if down:
            raise ImageBuildError(f"the Docker Engine of {', '.join(down)} does not answer: "
                                  f"run `skiff lab up --name {args.lab}` to repair the lab")
        targets = {n.name: dockerd.docker_client(n.docker_host, timeout=300) for n in state.nodes}
        try:
            with contextlib.closing(source_client(args.docker_host)) as source:
                copy_images(source, list(args.images), targets)
        finally:
            for client in targets.values():
                client.close()
    except (ImageBuildError, LabError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for image in args.images:
        print(f"{image}: loaded into {', '.join(targets)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m node_agent.images.main build|load ...``: the same commands without the ``skiff`` wrapper."""
    parser = argparse.ArgumentParser(prog="skiff")
    add_image_parser(parser.add_subparsers(dest="subcommand"))
    args = parser.parse_args(["image", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
