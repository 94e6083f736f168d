#!/usr/bin/env python3
"""Drive an MCP server over Streamable HTTP with the official MCP Python SDK.

    python tests/clients/http_client.py [options] URL

Connects to URL (e.g. http://127.0.0.1:8001/mcp), negotiates a protocol version,
lists the tools, optionally calls one, and prints one JSON object on stdout
(see _driver.py for its shape and the exit statuses). With a handshake-era
revision the session is ended with DELETE on exit, as the SDK does.

Examples:
    python tests/clients/http_client.py http://127.0.0.1:8001/mcp
    python tests/clients/http_client.py --header 'Authorization: Bearer TOKEN' \\
        --call echo --args '{"text": "hi"}' http://127.0.0.1:8001/mcp
    python tests/clients/http_client.py --protocol-version 2025-06-18 http://127.0.0.1:8001/mcp
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import _driver
import httpx2

from mcp.client.streamable_http import streamable_http_client

PROG = "http_client"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Talk to an MCP server over Streamable HTTP with the MCP Python SDK."
    )
    _driver.add_common_arguments(parser)
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra HTTP header on every request (repeatable), e.g. 'Authorization: Bearer TOKEN'",
    )
    parser.add_argument(
        "--no-terminate",
        action="store_true",
        help="do not send DELETE to end the session on exit",
    )
    parser.add_argument("url", help="the MCP endpoint, e.g. http://127.0.0.1:8001/mcp")
    return parser


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    headers: dict[str, str] = {}
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            parser.error(f"--header wants 'NAME: VALUE', got {raw!r}")
        headers[name.strip()] = value.strip()
    args.headers = headers
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"URL must start with http:// or https://, got {args.url!r}")


async def connect(args: argparse.Namespace, tool_args: dict[str, Any] | None) -> dict:
    # Same timeouts as the SDK's default client: the read timeout is long because a
    # server may hold an SSE stream open; the overall limit is --timeout anyway.
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(headers=args.headers, timeout=timeout) as http:
        async with streamable_http_client(
            args.url, http_client=http, terminate_on_close=not args.no_terminate
        ) as (read, write):
            session, inbox = _driver.open_session(read, write)
            async with session:
                return await _driver.run_session(session, inbox, args, tool_args)


def main(argv: list[str]) -> int:
    return _driver.main(PROG, build_parser(), argv, connect, validate)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
