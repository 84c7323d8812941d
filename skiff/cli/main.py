"""The ``skiff`` command: kubectl-like verbs, plus the ``server``/``agent``/``lab`` programs.

Verbs are coroutines ``(Cli, args) -> exit code``; errors are turned into kubectl's
messages in one place (`run`). Subcommands registered by other packages (``server`` from
the control plane, ``agent`` and ``lab`` from the node agent) are plain ``func(args)``
callables run outside any event loop; they are skipped when their package is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from skiff.cli.apply import cmd_apply, cmd_create
from skiff.cli.context import Cli, CliError, GlobalOptions, load_client_config
from skiff.cli.delete import cascade_policy, cmd_delete
from skiff.cli.describe import cmd_describe
from skiff.cli.exec import cmd_exec
from skiff.cli.get import cmd_get
from skiff.cli.logs import cmd_logs, parse_since
from skiff.client.api import ApiClient
from skiff.client.backoff import RetryPolicy
from skiff.client.errors import ApiConnectionError, ApiStatusError
from skiff.client.kubeconfig import ConfigError

Verb = Callable[[Cli, argparse.Namespace], Awaitable[int]]

# (module, function) pairs that add a subparser named after the program they run.
EXTERNAL_PARSERS = (
    ("control_plane.main", "add_server_parser"),
    ("node_agent.main", "add_agent_parser"),
    ("node_agent.proxy.main", "add_proxy_parser"),
    ("node_agent.lab.main", "add_lab_parser"),
    ("node_agent.images.main", "add_image_parser"),
    ("control_plane.controllers.main", "add_controller_manager_parser"),
    ("control_plane.scheduler.main", "add_scheduler_parser"),
)


def _global_flags() -> argparse.ArgumentParser:
    """Flags accepted before and after the verb (``skiff -n x get pods`` and ``skiff get pods -n x``).
    Defaults are suppressed so a value given in one place is not reset by the other."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    p.add_argument("--kubeconfig", help="path to the kubeconfig file")
    p.add_argument("--context", help="the kubeconfig context to use")
    p.add_argument("-s", "--server", help="the address of the API server (instead of a kubeconfig)")
    p.add_argument("--token", help="bearer token for authentication")
    p.add_argument("--insecure-skip-tls-verify", action="store_true", help="do not verify the server certificate")
    p.add_argument("-n", "--namespace", help="the namespace scope for this request")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    p.add_argument("-l", "--selector", help="label selector, e.g. -l app=web,tier!=db")
    p.add_argument("--field-selector", help="field selector, e.g. --field-selector status.phase=Running")
    p.add_argument("-o", "--output", help="output format: yaml|json|wide|name")
    p.add_argument("-w", "--watch", action="store_true", help="after listing, watch for changes")
    p.add_argument("-v", "--v", dest="verbosity", type=int, help="log level (0-9)")
    return p


def parse_bool(value: str) -> bool:
    """kubectl's ``--flag=true|false`` spelling."""
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "t"):
        return True
    if lowered in ("false", "0", "no", "f"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r}")


def _add_filename(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("-f", "--filename", action="append", default=[], required=required,
                   help="file, directory or - (stdin) with manifests; may be repeated")
    p.add_argument("-R", "--recursive", action="store_true", help="process directories recursively")


def build_parser() -> argparse.ArgumentParser:
    flags = _global_flags()
    parser = argparse.ArgumentParser(prog="skiff", parents=[flags],
                                     description="Skiff: a small Kubernetes-compatible orchestrator.")
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")

    def verb(name: str, handler: Verb, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[flags], help=help_text, description=help_text)
        p.set_defaults(verb=handler)
        return p

    p = verb("get", cmd_get, "Display one or many resources")
    p.add_argument("resources", nargs="*", metavar="TYPE[/NAME] [NAME...]")

    p = verb("describe", cmd_describe, "Show details of a resource, with its events")
    p.add_argument("resources", nargs="*", metavar="TYPE[/NAME] [NAME...]")

    p = verb("apply", cmd_apply, "Apply a configuration to resources from files or stdin")
    _add_filename(p)
    p.add_argument("--server-side", action="store_true", help="apply on the server (field management)")
    p.add_argument("--validate", type=parse_bool, nargs="?", const=True, default=True,
                   help="accepted for kubectl compatibility; the server validates")
    p.add_argument("--force-conflicts", action="store_true", help="with --server-side, take over conflicting fields")
    p.add_argument("--dry-run", nargs="?", const="server", default=None, choices=("none", "server", "client"),
                   help="only show what would happen")

    p = verb("create", cmd_create, "Create resources from files, or a namespace: create namespace NAME")
    p.add_argument("what", nargs="*", metavar="namespace NAME")
    _add_filename(p)
    p.add_argument("--save-config", action="store_true", help="record the config for a later apply")
    p.add_argument("--dry-run", nargs="?", const="server", default=None, choices=("none", "server", "client"))

    p = verb("delete", cmd_delete, "Delete resources by type and name, selector, or files")
    p.add_argument("resources", nargs="*", metavar="TYPE[/NAME] [NAME...]")
    _add_filename(p)
    p.add_argument("--all", action="store_true", help="delete every resource of the type in the namespace")
    p.add_argument("--ignore-not-found", action="store_true", help="treat a missing resource as deleted")
    p.add_argument("--grace-period", type=int, default=-1, help="seconds to let the resource terminate")
    p.add_argument("--now", action="store_true", help="grace period of 1 second")
    p.add_argument("--force", action="store_true", help="with --grace-period=0, delete immediately")
    p.add_argument("--cascade", dest="cascade_policy", type=cascade_policy, default="Background",
                   help="background|foreground|orphan")
    p.add_argument("--wait", type=parse_bool, nargs="?", const=True, default=True,
                   help="wait for the resources to be gone (default true; --wait=false to return at once)")
    p.add_argument("--timeout", type=float, default=0, help="seconds to wait; 0 waits forever")

    p = verb("logs", cmd_logs, "Print the logs of a container in a pod")
    p.add_argument("pod", metavar="POD")
    p.add_argument("-c", "--container", help="the container (required when the pod has several)")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new output")
    p.add_argument("--tail", type=int, default=None, help="only the last N lines")
    p.add_argument("-p", "--previous", action="store_true", help="the previous, terminated instance")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with its RFC 3339 timestamp")
    p.add_argument("--since", type=parse_since, default=None, help="only newer than a duration, e.g. 5m")
    p.add_argument("--limit-bytes", type=int, default=None, help="at most N bytes")

    p = verb("exec", cmd_exec, "Run a command in a container: exec POD [-c C] [-i] [-t] -- CMD...")
    p.add_argument("pod", metavar="POD")
    p.add_argument("-c", "--container", help="the container (default: the only or default one)")
    p.add_argument("-i", "--stdin", action="store_true", help="pass stdin to the command")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("words", nargs="*", metavar="CMD", help=argparse.SUPPRESS)  # the deprecated form without --

    for module_name, function_name in EXTERNAL_PARSERS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        add_parser = getattr(module, function_name, None)
        if add_parser is not None:
            add_parser(sub)
    return parser


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """``exec POD -- CMD ARGS`` keeps everything after the first ``--`` away from argparse."""
    if "--" in argv and "exec" in argv[: argv.index("--")]:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def parse_args(argv: list[str]) -> argparse.Namespace:
    own, command = _split_command(argv)
    parser = build_parser()
    args = parser.parse_args(own)
    if args.subcommand is None:
        parser.print_help(sys.stderr)
        raise SystemExit(1)
    if args.subcommand == "exec":
        args.command = command or list(args.words)
    return args


def _setup_logging(args: argparse.Namespace) -> None:
    level = getattr(args, "verbosity", 0) or 0
    logging.basicConfig(level=logging.DEBUG if level >= 6 else logging.INFO if level >= 4 else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


async def run_verb(args: argparse.Namespace) -> int:
    """Run one of the client verbs; every failure becomes kubectl's message and exit code 1."""
    out, err = Cli.streams()
    opts = GlobalOptions.from_args(args)
    try:
        config = load_client_config(opts)
    except ConfigError as exc:
        err.write(f"error: {exc}\n")
        return 1
    # Interactive use: one retry is enough to ride out a blip; more would only delay the error.
    async with ApiClient(config, retry=RetryPolicy(attempts=2)) as client:
        cli = Cli(opts, client, out, err)
        try:
            handler: Verb = args.verb
            return await handler(cli, args)
        except ApiStatusError as exc:
            err.write(f"Error from server ({exc.reason}): {exc.message}\n")
        except ApiConnectionError as exc:
            err.write(_connection_message(config.server, exc) + "\n")
        except (CliError, ConfigError) as exc:
            err.write(f"error: {exc}\n")
        return 1


def _connection_message(server: str, exc: ApiConnectionError) -> str:
    host = urlsplit(server).netloc or server
    cause = exc.__cause__
    if isinstance(cause, ConnectionRefusedError) or "Connect call failed" in str(exc) \
            or "Cannot connect" in str(exc):
        return f"The connection to the server {host} was refused - did you specify the right host or port?"
    return f"Unable to connect to the server: {exc.message}"


async def run(argv: list[str]) -> int:
    """Parse and run a client verb inside the current event loop (for tests and embedding)."""
    args = parse_args(argv)
    if not hasattr(args, "verb"):
        raise CliError(f"{args.subcommand} cannot run inside an event loop")
    return await run_verb(args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if hasattr(args, "verb"):
            _setup_logging(args)  # programs like `server` configure their own logging
            code: Any = asyncio.run(run_verb(args))
        else:
            func: Callable[[argparse.Namespace], Any] | None = getattr(args, "func", None)
            if func is None:
                raise SystemExit(f"skiff: {args.subcommand} has no handler")
            code = func(args)
            if inspect.isawaitable(code):
                code = asyncio.run(_await(code))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


if __name__ == "__main__":
    main()
