#!/usr/bin/env python3
"""Sign in to an MCP server through its OAuth proxy with the official MCP Python SDK,
headlessly.

    python tests/clients/oauth_flow.py [options] URL

The SDK's OAuthClientProvider does what a real client does: it reads the 401
challenge, discovers the protected-resource and authorization-server metadata,
registers (RFC 7591) or presents a client ID metadata document (--client-metadata-url),
and runs the authorization code flow with PKCE. This script plays the user's browser
in between: it opens the authorization URL, submits the consent form, follows the
identity provider's redirect back to the server, and hands the code that arrives at
the redirect URI to the SDK. Then the session lists the tools and optionally calls one
(see _driver.py). With --refresh it then expires the access token and calls again, so
the SDK refreshes it.

Prints ONE JSON object: the _driver.py output plus
    "oauth": {"client_id": ..., "steps": [{"host": ..., "path": ..., "status": ...}],
              "consent": {"x_frame_options": ..., "csp": ..., "shown": true},
              "has_refresh_token": bool, "refreshed": bool, "after_refresh": {...}}
Token values are never printed.

Examples:
    python tests/clients/oauth_flow.py --call _get_authentication_info http://127.0.0.1:8001/mcp
    python tests/clients/oauth_flow.py --client-metadata-url https://app.example/client.json \\
        --redirect-uri http://127.0.0.1:53682/callback http://127.0.0.1:8001/mcp
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import _driver
import httpx2

from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

PROG = "oauth_flow"
REDIRECTS = {301, 302, 303, 307, 308}


class MemoryStorage:
    """TokenStorage in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Browser:
    """Follows redirects, keeps cookies per host:port, submits the consent form."""

    def __init__(self, redirect_uri: str, decision: str) -> None:
        self.redirect_uri = redirect_uri
        self.decision = decision
        self.cookies: dict[str, dict[str, str]] = {}
        self.steps: list[dict[str, Any]] = []
        self.consent: dict[str, Any] | None = None
        self.result: AuthorizationCodeResult | None = None

    def _keep_cookies(self, url: str, response: httpx2.Response) -> None:
        jar = self.cookies.setdefault(urlsplit(url).netloc, {})
        for raw in response.headers.get_list("set-cookie"):
            name, _, rest = raw.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0].strip()

    async def _send(self, http: httpx2.AsyncClient, method: str, url: str, data: dict | None = None) -> httpx2.Response:
        jar = self.cookies.get(urlsplit(url).netloc, {})
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
        response = await http.request(method, url, data=data, headers=headers)
        self._keep_cookies(url, response)
        parts = urlsplit(url)
        self.steps.append({"host": parts.netloc, "path": parts.path, "method": method, "status": response.status_code})
        return response

    async def visit(self, url: str) -> None:
        """The SDK's redirect_handler: the user's browser opens the authorization URL."""
        async with httpx2.AsyncClient(follow_redirects=False, timeout=10.0) as http:
            response = await self._send(http, "GET", url)
            for _ in range(12):
                if response.status_code in REDIRECTS:
                    location = urljoin(url, response.headers["location"])
                    if location.startswith(self.redirect_uri):
                        query = parse_qs(urlsplit(location).query)
                        if "error" in query:
                            raise _driver.DriverError(
                                f"the authorization ended with error {query['error'][0]}: "
                                f"{query.get('error_description', [''])[0]}"
                            )
                        self.result = AuthorizationCodeResult(
                            code=query["code"][0],
                            state=query.get("state", [None])[0],
                            iss=query.get("iss", [None])[0],
                        )
                        return
                    url = location
                    response = await self._send(http, "GET", url)
                    continue
                body = response.text
                form = re.search(r'<form method="post" action="([^"]+)">', body)
                if response.status_code == 200 and form:
                    fields = {
                        html.unescape(n): html.unescape(v)
                        for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', body)
                    }
                    fields["decision"] = self.decision
                    self.consent = {
                        "shown": True,
                        "x_frame_options": response.headers.get("x-frame-options"),
                        "csp": response.headers.get("content-security-policy"),
                        "text": re.sub(r"<[^>]+>", " ", body)[:2000],
                    }
                    url = urljoin(url, html.unescape(form.group(1)))
                    response = await self._send(http, "POST", url, data=fields)
                    continue
                raise _driver.DriverError(
                    f"the sign-in stopped at {urlsplit(url).path} with HTTP {response.status_code}: {body[:300]}"
                )
            raise _driver.DriverError("too many redirects during the sign-in")

    async def callback(self) -> AuthorizationCodeResult:
        """The SDK's callback_handler: what arrived at the redirect URI."""
        if self.result is None:
            raise _driver.DriverError("no authorization code arrived at the redirect URI")
        result, self.result = self.result, None
        return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Sign in through an MCP server's OAuth proxy with the MCP Python SDK, headlessly."
    )
    _driver.add_common_arguments(parser)
    parser.add_argument(
        "--client-metadata-url",
        metavar="URL",
        help="use this https URL as client_id (a client ID metadata document) instead of registering",
    )
    parser.add_argument(
        "--redirect-uri",
        default="http://127.0.0.1:53682/callback",
        metavar="URI",
        help="the client's redirect URI (nothing listens there; the browser stops at it)",
    )
    parser.add_argument("--deny", action="store_true", help="deny instead of approving on the consent page")
    parser.add_argument(
        "--refresh", action="store_true", help="after the first session, expire the access token and call again"
    )
    parser.add_argument("url", help="the MCP endpoint, e.g. http://127.0.0.1:8001/mcp")
    return parser


async def run_once(
    url: str, provider: OAuthClientProvider, args: argparse.Namespace, tool_args: dict[str, Any] | None
) -> dict:
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(auth=provider, timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            session, inbox = _driver.open_session(read, write)
            async with session:
                return await _driver.run_session(session, inbox, args, tool_args)


async def connect(args: argparse.Namespace, tool_args: dict[str, Any] | None) -> dict:
    storage = MemoryStorage()
    browser = Browser(args.redirect_uri, "deny" if args.deny else "approve")
    provider = OAuthClientProvider(
        server_url=args.url,
        client_metadata=OAuthClientMetadata(
            redirect_uris=[args.redirect_uri],
            client_name="mreg headless test client",
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=browser.visit,
        callback_handler=browser.callback,
        client_metadata_url=args.client_metadata_url,
    )
    out = await run_once(args.url, provider, args, tool_args)
    first = storage.tokens.access_token if storage.tokens else None
    oauth: dict[str, Any] = {
        "client_id": storage.client_info.client_id if storage.client_info else None,
        "steps": browser.steps,
        "consent": browser.consent,
        "has_refresh_token": bool(storage.tokens and storage.tokens.refresh_token),
        "refreshed": False,
    }
    if args.refresh:
        steps_before = len(browser.steps)
        provider.context.token_expiry_time = time.time() - 1
        again = await run_once(args.url, provider, args, tool_args)
        oauth["refreshed"] = bool(storage.tokens and storage.tokens.access_token != first)
        oauth["browser_used_again"] = len(browser.steps) > steps_before
        oauth["after_refresh"] = {"call": again.get("call"), "tools": again.get("tools")}
    out["oauth"] = oauth
    return out


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"URL must start with http:// or https://, got {args.url!r}")


def main(argv: list[str]) -> int:
    return _driver.main(PROG, build_parser(), argv, connect, validate)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
