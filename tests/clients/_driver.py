"""Shared logic of the MCP client drivers in this folder (stdio_client.py, http_client.py).

A driver connects with the official MCP Python SDK, negotiates a protocol version,
lists the tools, optionally calls one, and prints ONE JSON object on stdout:

    {
      "protocolVersion": "2025-11-25",
      "era": "handshake" | "modern",
      "serverInfo": {"name": ..., "version": ...} | null,
      "capabilities": {...},
      "tools": ["name", ...],
      "call": {"name": ..., "content": [...], "structuredContent": ... | null,
               "isError": false},           # only with --call
      "notifications": [{"method": ..., "params": ...}, ...]  # what the server sent
    }

Exit status: 0 on success (a tool result with isError=true is still a success unless
--fail-on-tool-error is given), 1 on any failure (spawn/connect/protocol/JSON-RPC
error, timeout), 2 on bad usage, 3 for a tool error result with --fail-on-tool-error.
Failures are explained on stderr; stdout then stays empty.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

try:
    import anyio
    import mcp_types as types
    from mcp.client.session import ClientSession
    from mcp.shared.exceptions import MCPError
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.stderr.write(
        f"error: the MCP Python SDK is not importable ({exc}).\n"
        "Run scripts/test-setup and use the venv's python (MREG_TEST_PYTHON in target/test-tools.env).\n"
    )
    sys.exit(1)

try:  # the SDK's own connect-time policy: server/discover first, initialize as fallback
    from mcp.client._probe import negotiate_auto as _sdk_negotiate_auto
except ImportError:  # pragma: no cover - older/newer SDK layout
    _sdk_negotiate_auto = None

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_TOOL_ERROR = 3


class DriverError(Exception):
    """A failure with a message meant for a person."""


class Inbox:
    """ClientSession message_handler: keeps server notifications, and transport faults
    (e.g. a line on the server's stdout that is not JSON-RPC), which fail the run."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.faults: list[str] = []

    async def __call__(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.faults.append(f"{message.__class__.__name__}: {message}")
        else:
            self.notifications.append(_dump(message))


def open_session(read: Any, write: Any) -> tuple[ClientSession, Inbox]:
    inbox = Inbox()
    return ClientSession(read, write, message_handler=inbox), inbox


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    known = ", ".join([*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS])
    parser.add_argument(
        "--protocol-version",
        default="auto",
        metavar="VERSION",
        help=(
            "'auto' (default): what the SDK does by itself, server/discover at the newest "
            "revision then the initialize handshake as fallback; 'legacy': the initialize "
            "handshake at the SDK's newest handshake revision; or an exact revision "
            f"(one of: {known}) which is then required: a handshake revision is offered in "
            "initialize and the server must accept it, a modern one is probed with "
            "server/discover and must be supported"
        ),
    )
    parser.add_argument("--call", metavar="NAME", help="call this tool after listing the tools")
    parser.add_argument(
        "--args",
        metavar="JSON",
        default=None,
        help='arguments of the --call tool, a JSON object (default: none), e.g. \'{"x": 1}\'',
    )
    parser.add_argument(
        "--fail-on-tool-error",
        action="store_true",
        help=f"exit {EXIT_TOOL_ERROR} when the tool result has isError=true (default: report it, exit 0)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="overall time limit (default: 30)"
    )
    parser.add_argument("--pretty", action="store_true", help="indent the JSON output")
    parser.add_argument("--verbose", action="store_true", help="log the SDK's debug output on stderr")


def parse_tool_args(parser: argparse.ArgumentParser, raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        parser.error(f"--args is not valid JSON: {exc}")
    if not isinstance(value, dict):
        parser.error("--args must be a JSON object")
    return value


def check_protocol_version(parser: argparse.ArgumentParser, version: str) -> None:
    if version in ("auto", "legacy") or version in HANDSHAKE_PROTOCOL_VERSIONS or version in MODERN_PROTOCOL_VERSIONS:
        return
    parser.error(
        f"--protocol-version {version!r} is not known to this SDK; use auto, legacy or one of "
        + ", ".join([*HANDSHAKE_PROTOCOL_VERSIONS, *MODERN_PROTOCOL_VERSIONS])
    )


def _dump(model: Any) -> Any:
    if model is None:
        return None
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


async def _handshake(session: ClientSession, version: str) -> None:
    """Send initialize offering exactly `version` and require the server to accept it."""
    result = await session.send_request(
        types.InitializeRequest(
            params=types.InitializeRequestParams(
                protocol_version=version,
                capabilities=types.ClientCapabilities(),
                client_info=types.Implementation(name="mreg-test-client", version="0"),
            ),
        ),
        types.InitializeResult,
    )
    if result.protocol_version != version:
        raise DriverError(
            f"the server answered initialize({version}) with protocolVersion {result.protocol_version}"
        )
    session.adopt(result)
    await session.send_notification(types.InitializedNotification())


async def _discover(session: ClientSession, version: str) -> None:
    raw = await session.send_discover(version)
    result = types.DiscoverResult.model_validate(raw)
    if version not in result.supported_versions:
        raise DriverError(
            f"server/discover does not list {version} in supportedVersions {result.supported_versions}"
        )
    session.adopt(result)


async def _auto(session: ClientSession) -> None:
    if _sdk_negotiate_auto is not None:
        await _sdk_negotiate_auto(session)
        return
    try:  # pragma: no cover - fallback for an SDK without mcp.client._probe
        await session.discover()
    except MCPError:
        await session.initialize()


async def negotiate(session: ClientSession, version: str) -> None:
    if version == "auto":
        await _auto(session)
    elif version == "legacy":
        await session.initialize()
    elif version in MODERN_PROTOCOL_VERSIONS:
        await _discover(session, version)
    else:
        await _handshake(session, version)


async def run_session(
    session: ClientSession, inbox: Inbox, args: argparse.Namespace, tool_args: dict[str, Any] | None
) -> dict:
    step = "connect"
    try:
        step = "protocol negotiation"
        await negotiate(session, args.protocol_version)
        era = "modern" if session.protocol_version in MODERN_PROTOCOL_VERSIONS else "handshake"
        caps = session.server_capabilities
        out: dict[str, Any] = {
            "protocolVersion": session.protocol_version,
            "era": era,
            "serverInfo": _dump(session.server_info),
            "capabilities": _dump(caps),
        }

        step = "tools/list"
        names: list[str] = []
        cursor: str | None = None
        for _ in range(1000):
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            names.extend(tool.name for tool in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        else:
            raise DriverError("tools/list kept returning a nextCursor after 1000 pages")
        out["tools"] = names

        if args.call:
            step = f"tools/call {args.call}"
            result = await session.call_tool(args.call, tool_args)
            dumped = _dump(result)
            out["call"] = {
                "name": args.call,
                "content": dumped.get("content", []),
                "structuredContent": dumped.get("structuredContent"),
                "isError": bool(result.is_error),
            }
        out["notifications"] = inbox.notifications
        step = "the session"
        if inbox.faults:
            raise DriverError("the transport reported: " + "; ".join(f.replace("\n", " | ") for f in inbox.faults))
        return out
    except MCPError as exc:
        data = f" data={json.dumps(exc.data)}" if exc.data is not None else ""
        faults = f" (transport: {'; '.join(inbox.faults)})" if inbox.faults else ""
        raise DriverError(f"{step} failed: JSON-RPC error {exc.code}: {exc.message}{data}{faults}") from exc
    except DriverError as exc:
        raise DriverError(f"{step} failed: {exc}") from exc


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        leaves: list[BaseException] = []
        for inner in exc.exceptions:
            leaves.extend(_leaf_errors(inner))
        return leaves
    return [exc]


def _describe(exc: BaseException) -> str:
    leaves = [e for e in _leaf_errors(exc) if not isinstance(e, asyncio.CancelledError)] or [exc]
    parts = []
    for leaf in leaves:
        text = str(leaf) or leaf.__class__.__name__
        if not isinstance(leaf, DriverError):
            text = f"{leaf.__class__.__name__}: {text}"
        parts.append(text)
    return "; ".join(dict.fromkeys(parts))


def main(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: list[str],
    connect: Callable[[argparse.Namespace, dict[str, Any] | None], Awaitable[dict]],
    validate: Callable[[argparse.ArgumentParser, argparse.Namespace], None] | None = None,
) -> int:
    args = parser.parse_args(argv)
    if validate is not None:
        validate(parser, args)
    check_protocol_version(parser, args.protocol_version)
    tool_args = parse_tool_args(parser, args.args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR,
        format=f"{prog}: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    async def bounded() -> dict:
        with anyio.fail_after(args.timeout):
            return await connect(args, tool_args)

    try:
        out = anyio.run(bounded)
    except TimeoutError:
        sys.stderr.write(f"{prog}: error: timed out after {args.timeout:g}s (see --timeout)\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:  # noqa: BLE001 - every failure is reported the same way
        if isinstance(exc, SystemExit):
            raise
        sys.stderr.write(f"{prog}: error: {_describe(exc)}\n")
        return EXIT_FAILURE

    json.dump(out, sys.stdout, indent=2 if args.pretty else None, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()
    call = out.get("call")
    if args.fail_on_tool_error and call and call["isError"]:
        sys.stderr.write(f"{prog}: error: tool {call['name']} returned isError=true\n")
        return EXIT_TOOL_ERROR
    return 0
