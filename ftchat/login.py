"""Logins that cannot be guessed quickly: a constant-time password check and a per-address lockout.

Four wrong passwords from one address cost nothing (typos); the fifth and each later one locks that address
out for twice as long as the last (2 s, 4 s, 8 s ... up to 15 min), and while locked every login from it, the
right password included, is answered 429 with Retry-After. Other addresses are not affected. The address is the
TCP peer's: headers such as X-Forwarded-For are set by the client, so they are trusted only behind a reverse proxy
the owner names (`python app.py --trust-proxy`; see `trust_forwarded_headers`).
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import math
import os
import threading
import time
from collections import OrderedDict

FREE_FAILURES = 5
FIRST_LOCK_S = 2.0
MAX_LOCK_S = 15 * 60
MAX_ADDRESSES = 10_000  # failures are remembered for this many addresses; the oldest are forgotten first


def password_check(user: str, password: str):
    """A callable (user, password) -> bool for Gradio's `auth=` that compares in constant time."""
    expected = (user.encode(), password.encode())

    def check(given_user: str, given_password: str) -> bool:
        same_user = hmac.compare_digest(str(given_user).encode(), expected[0])
        same_password = hmac.compare_digest(str(given_password).encode(), expected[1])
        return same_user & same_password  # both compared every time: the timing says nothing about which failed

    return check


class LoginThrottle:
    """Failed logins per address and the lockout they earn."""

    def __init__(self, free_failures: int = FREE_FAILURES, max_lock_s: float = MAX_LOCK_S, clock=time.monotonic):
        self.free_failures = free_failures
        self.max_lock_s = max_lock_s
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (count, locked until)
        self._lock = threading.Lock()

    def wait_s(self, address: str) -> float:
        """Seconds this address must wait before its next login is checked (0: go ahead)."""
        with self._lock:
            _, until = self._failures.get(address, (0, 0.0))
            return max(0.0, until - self.clock())

    def failed(self, address: str) -> None:
        with self._lock:
            count, _ = self._failures.pop(address, (0, 0.0))
            count += 1
            extra = count - self.free_failures  # 0 at the last free failure: from then on each one locks
            until = self.clock() + min(self.max_lock_s, FIRST_LOCK_S * 2.0 ** extra) if extra >= 0 else 0.0
            self._failures[address] = (count, until)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


class ThrottledLogin:
    """ASGI middleware around an app whose POST .../login answers 200 on success and 4xx on failure (Gradio's):
    locked-out addresses get 429 without their password being checked."""

    def __init__(self, app, throttle: LoginThrottle | None = None):
        self.app = app
        self.throttle = throttle or LoginThrottle()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or \
                not scope.get("path", "").rstrip("/").endswith("/login"):
            return await self.app(scope, receive, send)
        address = (scope.get("client") or ("unknown", 0))[0]
        wait = self.throttle.wait_s(address)
        if wait > 0:
            seconds = math.ceil(wait)
            body = json.dumps({"detail": f"Too many failed logins from {address}; try again in {seconds} s."})
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(seconds).encode())]})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        outcome = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        status = outcome.get("status", 500)
        if 200 <= status < 400:
            self.throttle.succeeded(address)
        elif 400 <= status < 500:
            self.throttle.failed(address)


def trust_forwarded_headers(trust: bool) -> None:
    """Whether the server (uvicorn, under Gradio) takes X-Forwarded-For as the client's address. uvicorn does by
    default for a loopback peer, so any process on this machine could claim a fresh address for every guess and
    never be locked out; only behind a reverse proxy on this machine (trust=True) is the header the proxy's word.
    Set before the server starts: uvicorn reads FORWARDED_ALLOW_IPS when it is configured."""
    if trust:
        os.environ.setdefault("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
    else:
        os.environ["FORWARDED_ALLOW_IPS"] = ""  # no peer is a trusted proxy


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback (off loopback, the app and serve need auth)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
