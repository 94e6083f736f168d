#!/usr/bin/env python3
"""Drive an MCP server over stdio with the official MCP Python SDK.

    python tests/clients/stdio_client.py [options] -- COMMAND [ARG...]

Spawns COMMAND (e.g. `target/debug/mreg stdio`), negotiates a protocol version,
lists the tools, optionally calls one, and prints one JSON object on stdout
(see _driver.py for its shape and the exit statuses). The server inherits this
process's environment; its stderr goes to this process's stderr.

Examples:
    python tests/clients/stdio_client.py -- target/debug/mreg stdio
    python tests/clients/stdio_client.py --call echo --args '{"text": "hi"}' -- target/debug/mreg stdio
    python tests/clients/stdio_client.py --protocol-version 2025-06-18 -- target/debug/mreg stdio
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import _driver

from mcp.client.stdio import StdioServerParameters, stdio_client

PROG = "stdio_client"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Spawn an MCP server and talk to it over stdio with the MCP Python SDK.",
        epilog="Everything after -- is the server command and its arguments.",
    )
    _driver.add_common_arguments(parser)
    parser.add_argument("--cwd", help="working directory of the server process")
    parser.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment variable for the server (repeatable)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    return parser


async def connect(args: argparse.Namespace, tool_args: dict[str, Any] | None) -> dict:
    env = dict(os.environ)
    for pair in args.env:
        key, _, value = pair.partition("=")
        env[key] = value
    params = StdioServerParameters(command=args.command[0], args=args.command[1:], env=env, cwd=args.cwd)
    async with stdio_client(params, errlog=sys.stderr) as (read, write):
        session, inbox = _driver.open_session(read, write)
        async with session:
            return await _driver.run_session(session, inbox, args, tool_args)


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    command = list(args.command or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("missing the server command: ... -- COMMAND [ARG...]")
    args.command = command
    for pair in args.env:
        if "=" not in pair:
            parser.error(f"--env wants KEY=VALUE, got {pair!r}")


def main(argv: list[str]) -> int:
    return _driver.main(PROG, build_parser(), argv, connect, validate)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
