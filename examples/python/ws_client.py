#!/usr/bin/env python3
"""Connect to mcp-status through Traefik + gatepass and print the status stream.

The token travels as a WebSocket subprotocol next to the `jwt-auth` marker (or is exchanged
for a one-time ticket with --ticket); it never goes into the URL.

    python ws_client.py --url ws://127.0.0.1:8080/ws/mcp-status --token TOKEN [--ticket] [--count N]

When the server closes the stream it prints the close code and reason to stderr (e.g.
`closed 1001 Server shutting down`, `closed 4001 Token expired`; `closed 1006` when the
connection dropped without a close frame). Exit status: 0 after --count messages, on a 1000
normal closure, or on Ctrl-C; 1 for a refused handshake or any other close.

Needs the `websockets` package (`make run` installs it into .venv).
"""
import argparse
import asyncio
import json
import sys
import urllib.request

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus


def buy_ticket(ws_url: str, token: str) -> str:
    base = ws_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).split("/ws/")[0]
    req = urllib.request.Request(base + "/auth/tickets", method="POST",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)["ticket"]


def close_of(e: ConnectionClosed) -> tuple[int, str]:
    """The close code and reason the server sent; 1006 when no close frame arrived."""
    if e.rcvd is not None:
        return e.rcvd.code, e.rcvd.reason
    return 1006, ""


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--ticket", action="store_true", help="use a one-time ticket instead of the subprotocol")
    p.add_argument("--count", type=int, default=0, help="exit after N messages (0 = run until closed)")
    args = p.parse_args()

    if args.ticket:
        url = f"{args.url}?ticket={buy_ticket(args.url, args.token)}"
        protocols = ["jwt-auth"]
    else:
        url, protocols = args.url, ["jwt-auth", args.token]

    try:
        async with websockets.connect(url, subprotocols=protocols) as ws:
            print(f"connected, subprotocol={ws.subprotocol}", file=sys.stderr)
            seen = 0
            while True:
                # recv() rather than `async for`, which ends quietly on 1000 *and* 1001.
                message = await ws.recv()
                print(message, flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    return 0
    except InvalidStatus as e:
        print(f"refused: HTTP {e.response.status_code}", file=sys.stderr)
        return 1
    except ConnectionClosed as e:
        code, reason = close_of(e)
        print(f"closed {code} {reason}".rstrip(), file=sys.stderr, flush=True)
        return 0 if code == 1000 else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(0)
