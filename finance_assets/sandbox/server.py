"""The sandbox HTTP server: token endpoint, the 16 list endpoints, faults and admin API.

Stdlib only (``http.server``), so the package can serve its own test double
anywhere. Only list requests are counted, rate-limited, faulted and delayed;
token and ``/__sandbox/`` admin requests never are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import random
import re
import secrets
import socket
import threading
import time
from collections import defaultdict
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from finance_assets.endpoints import BY_NAME, BY_PATH, Endpoint
from finance_assets.sandbox.data import BREAKABLE_RULES, Generator
from finance_assets.sandbox.store import Table

# Demo credentials of the sandbox; public on purpose, they guard nothing.
DEMO_CLIENT_ID = "1000.SANDBOXDEMOCLIENT"
DEMO_CLIENT_SECRET = "sandbox-demo-client-secret"
DEMO_REFRESH_TOKEN = "1000.sandbox-demo-refresh-token"

TOKEN_PATH = "/oauth/v2/token"
ADMIN_PREFIX = "/__sandbox/"
FAULT_KINDS = ("500", "502", "503", "504", "close", "slow", "429")
# "slow" stalls a server thread and "429" makes clients wait, so both are opt-in.
DEFAULT_FAULT_KINDS = FAULT_KINDS[:5]
# Wrong answers a broken API or a misconfigured URL gives, switchable live (``malformed``).
MALFORMED_KINDS = ("not_json", "no_selector", "error_code", "endless",
                   "token_without_access_token")
UNLIMITED = 1_000_000  # advertised per-minute limit when none is enforced
WINDOW_SECONDS = 60
SCOPE = "financial.read"
# RFC 3339 with a mandatory offset; a space where the sign was (a raw '+') is rejected.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_INTEGER = re.compile(r"^-?[0-9]{1,30}$")
_HTML = "<html><body><h1>{status} {phrase}</h1><p>sandbox proxy</p></body></html>"
_NOT_JSON = b"<html><head><title>Sign in</title></head><body>Please sign in.</body></html>"
_LIST_MALFORMED = frozenset(MALFORMED_KINDS) - {"token_without_access_token"}


@dataclasses.dataclass
class SandboxConfig:
    """Data, network and fault settings of one sandbox (see the package README)."""

    seed: int = 42
    scale: float = 1.0
    host: str = "127.0.0.1"
    port: int = 0
    token_ttl: float = 3600
    token_max_uses: int | None = None
    rate_limit: int | None = None
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] | None = None
    latency: float = 0.0
    slow_seconds: float = 1.0
    retry_after: int = 1
    rate_window: float = WINDOW_SECONDS
    malformed: str | None = None
    null_violations: int = 0
    bad_records: int = 0
    broken_rules: tuple[str, ...] = ()  # contract rules broken on purpose (BREAKABLE_RULES)
    client_id: str = DEMO_CLIENT_ID
    client_secret: str = DEMO_CLIENT_SECRET
    refresh_token: str = DEMO_REFRESH_TOKEN

    def __post_init__(self) -> None:
        if self.fault_kinds is not None:
            self.fault_kinds = tuple(str(k) for k in self.fault_kinds)
            unknown = set(self.fault_kinds) - set(FAULT_KINDS)
            if unknown or not self.fault_kinds:
                raise ValueError(f"fault_kinds must be a non-empty subset of {FAULT_KINDS}")
        if self.malformed is not None and self.malformed not in MALFORMED_KINDS:
            raise ValueError(f"malformed must be one of {MALFORMED_KINDS} or None")
        if self.rate_window <= 0:
            raise ValueError("rate_window must be positive")
        if not 0 <= self.fault_rate <= 1:
            raise ValueError("fault_rate must be within 0..1")
        if self.scale <= 0:
            raise ValueError("scale must be positive")
        self.broken_rules = tuple(str(r) for r in self.broken_rules)
        unknown = set(self.broken_rules) - set(BREAKABLE_RULES)
        if unknown:
            raise ValueError(f"broken_rules must be among {BREAKABLE_RULES}: {sorted(unknown)}")


# Settings that can change while serving; the others shape the data or the socket.
LIVE_SETTINGS = frozenset({
    "token_ttl", "token_max_uses", "rate_limit", "fault_rate", "fault_kinds", "latency",
    "slow_seconds", "retry_after", "rate_window", "malformed",
    "client_id", "client_secret", "refresh_token",
})


@dataclasses.dataclass
class _Token:
    client_id: str
    expires_at: float  # time.monotonic()
    uses: int = 0


@dataclasses.dataclass
class _Window:
    start: float
    count: int = 0


@dataclasses.dataclass
class _Pending:
    remaining: int
    apply: Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)


class Sandbox:
    """A local implementation of the API contract, served in background threads."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self._lock = threading.Lock()  # tokens, windows, stats, fault RNG, pending
        self._mutation_lock = threading.RLock()
        self._generator = Generator(self.config.seed, self.config.scale)
        data = self._generator.generate()
        self._generator.apply_null_violations(self.config.null_violations)
        self._generator.apply_bad_records(self.config.bad_records)
        self.broken_records = self._generator.apply_broken_rules(self.config.broken_rules)
        self.tables: dict[str, Table] = {name: Table(rows) for name, rows in data.items()}
        self._fault_rng = random.Random(f"{self.config.seed}:faults")
        self._mutation_rng = random.Random(f"{self.config.seed}:mutations")
        self._tokens: dict[str, _Token] = {}
        self._windows: dict[str, _Window] = {}
        self._pending: list[_Pending] = []
        self._issued: list[str] = []  # every access token ever issued, for leak tests
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset_stats()

    # ---------- lifecycle ----------
    def start(self) -> Sandbox:
        """Bind the port and serve in a background thread."""
        if self._server is None:
            self._server = _Server((self.config.host, self.config.port), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="sandbox-server", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.connections_lock:
            for conn in list(server.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("sandbox is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    @property
    def client_id(self) -> str:
        """Current credentials, so callers can build a client without the config."""
        return self.config.client_id

    @property
    def client_secret(self) -> str:
        return self.config.client_secret

    @property
    def refresh_token(self) -> str:
        return self.config.refresh_token

    # ---------- inspection ----------
    def records(self, name: str) -> list[dict[str, Any]]:
        """What a full read of the resource serves now, decoded with exact decimals."""
        blobs = self.tables[BY_NAME[name].name].all_blobs()
        return json.loads(b"[" + b",".join(blobs) + b"]", parse_float=Decimal)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": {p: dict(c) for p, c in self._requests.items()},
                "api_requests": self._api_requests,
                "tokens_issued": self._tokens_issued,
                "faults_injected": self._faults,
                "rate_limited": self._rate_limited,
            }

    def issued_tokens(self) -> list[str]:
        """Every access token issued so far (revoked ones too), so tests can hunt for leaks."""
        with self._lock:
            return list(self._issued)

    def reset_stats(self) -> None:
        with self._lock:
            self._requests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            self._api_requests = 0
            self._tokens_issued = 0
            self._faults = 0
            self._rate_limited = 0

    # ---------- live control ----------
    def configure(self, **changes: Any) -> SandboxConfig:
        """Change fault, limit and credential settings while serving."""
        fixed = set(changes) - LIVE_SETTINGS
        if fixed:
            raise ValueError(f"not changeable while serving: {sorted(fixed)}")
        with self._lock:
            self.config = dataclasses.replace(self.config, **changes)
            if "rate_limit" in changes or "rate_window" in changes:
                self._windows.clear()
        return self.config

    def revoke_tokens(self) -> int:
        """Invalidate every access token; returns how many there were."""
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
        return count

    def mutate(
        self, name: str, updates: int = 0, inserts: int = 0, deletes: int = 0,
        after_requests: int = 0, change_children: bool = True,
        update_ids: list[str] | None = None, delete_ids: list[str] | None = None,
        undocumented: dict[str, Any] | None = None,
    ) -> dict[str, list[str]]:
        """Update, insert and delete records, now or after the next N API requests.

        The ids are chosen up front and returned, so a test knows what will change.
        ``undocumented`` fields are added to the updated records, as an API that starts
        sending fields its contract does not name.
        """
        table = self.tables[BY_NAME[name].name]
        with self._mutation_lock:
            ids = table.ids()
            rng = self._mutation_rng
            delete_ids = list(delete_ids or [])
            update_ids = list(update_ids or [])
            unknown = set(update_ids + delete_ids) - set(ids)
            if unknown:
                raise ValueError(f"unknown {name} ids: {sorted(unknown)}")
            free = [i for i in ids if i not in set(update_ids + delete_ids)]
            delete_ids += rng.sample(free, min(deletes, len(free)))
            free = [i for i in free if i not in set(delete_ids)]
            update_ids += rng.sample(free, min(updates, len(free)))
            insert_ids = [self._generator.new_id(name) for _ in range(inserts)]
        plan = {"updated": update_ids, "inserted": insert_ids, "deleted": delete_ids}

        def apply() -> None:
            with self._mutation_lock:
                now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
                for record_id in update_ids:
                    record = table.find(record_id)
                    if record is not None:
                        self._generator.update(name, record, now, change_children)
                        record.update(undocumented or {})
                        table.refresh(record)
                for record_id in delete_ids:
                    table.delete(record_id)
                for record_id in insert_ids:
                    table.insert(self._generator.make(name, now, now, record_id))

        if after_requests > 0:
            with self._lock:
                self._pending.append(_Pending(after_requests, apply))
        else:
            apply()
        return plan

    # ---------- used by the handler ----------
    def _count(self, path: str, status: str) -> None:
        with self._lock:
            self._requests[path][status] += 1

    def _issue_token(self, client_id: str) -> dict[str, Any]:
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        ttl = self.config.token_ttl
        with self._lock:
            self._tokens[token] = _Token(client_id, time.monotonic() + ttl)
            self._tokens_issued += 1
            self._issued.append(token)
        return {"access_token": token, "token_type": "Bearer",
                "expires_in": max(1, math.ceil(ttl)), "scope": SCOPE}

    def _client_of(self, token: str | None) -> str:
        """Rate-limit key: the token's client, else one shared anonymous bucket."""
        with self._lock:
            found = self._tokens.get(token or "")
        return found.client_id if found else "anonymous"

    def _authorize(self, token: str | None) -> bool:
        """True if the token is valid now; a successful call uses it once."""
        now = time.monotonic()
        max_uses = self.config.token_max_uses
        with self._lock:
            found = self._tokens.get(token or "")
            if found is None or now >= found.expires_at:
                return False
            if max_uses is not None and found.uses >= max_uses:
                return False
            found.uses += 1
            return True

    def _rate(self, client: str, count: bool, limit: bool = True) -> tuple[dict[str, str], bool]:
        """Rate-limit headers for the client's window, and whether this request is over."""
        enforce, limit = limit, self.config.rate_limit
        span = self.config.rate_window
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(client)
            if window is None or now - window.start >= span:
                window = self._windows[client] = _Window(now)
            if count:
                window.count += 1
            ceiling = limit if limit is not None else UNLIMITED
            limited = enforce and limit is not None and window.count > limit
            if limited:
                self._rate_limited += 1
        reset = max(0, math.ceil(window.start + span - now))
        headers = {
            "X-Rate-Limit-Limit": str(ceiling),
            "X-Rate-Limit-Remaining": str(max(0, ceiling - window.count)),
            "X-Rate-Limit-Reset": str(reset),
        }
        if limited:
            headers["Retry-After"] = str(max(1, reset))
        return headers, limited

    def _draw_fault(self) -> tuple[str, str] | None:
        """(kind, body style) for this request, or None; seeded, so runs repeat."""
        with self._lock:
            self._api_requests += 1
            if self._fault_rng.random() >= self.config.fault_rate:
                return None
            self._faults += 1
            kind = self._fault_rng.choice(self.config.fault_kinds or DEFAULT_FAULT_KINDS)
            if kind == "429":
                self._rate_limited += 1
            return kind, self._fault_rng.choice(("json", "html", "empty"))

    def _tick(self) -> None:
        """One API request done: apply mutations whose countdown has run out."""
        with self._lock:
            due = []
            for pending in self._pending:
                pending.remaining -= 1
                if pending.remaining <= 0:
                    due.append(pending)
            self._pending = [p for p in self._pending if p.remaining > 0]
        for pending in due:
            pending.apply()


class _Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    server_version = "finance-sandbox/1.0"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks make many requests."""

    @property
    def sb(self) -> Sandbox:
        return self.server.sandbox

    # ---------- plumbing ----------
    def _send(self, status: int, body: bytes = b"", content_type: str | None = None,
              headers: dict[str, str] | None = None) -> None:
        """Write status, headers and body in one call (no Nagle stall between them).

        Non-admin responses are counted first, so stats are exact once a client has them.
        """
        path = self._split()[0]
        if not path.startswith(ADMIN_PREFIX):
            self.sb._count(path, str(status))
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Date: {self.date_time_string()}",
            f"Server: {self.server_version}",
            f"Content-Length: {len(body)}",
        ]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:  # the client gave up (e.g. timed out on a slow fault): not our error
            self.close_connection = True

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload, ensure_ascii=False).encode(),
                   "application/json; charset=utf-8", headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _split(self) -> tuple[str, str]:
        path, _, query = self.path.partition("?")
        return path, query

    # ---------- methods ----------
    def do_GET(self) -> None:
        path, query = self._split()
        if path.startswith(ADMIN_PREFIX):
            self._admin("GET", path, b"")
        elif path == TOKEN_PATH:
            self._method_not_allowed(path, "POST")
        else:
            self._api(path, query)

    def do_POST(self) -> None:
        path, _ = self._split()
        body = self._body()
        if path.startswith(ADMIN_PREFIX):
            self._admin("POST", path, body)
        elif path == TOKEN_PATH:
            self._token(body)
        else:
            self._other_method(path)

    def do_PUT(self) -> None:
        self._body()
        self._other_method(self._split()[0])

    do_DELETE = do_PATCH = do_PUT

    def _other_method(self, path: str) -> None:
        if path in BY_PATH:
            self._method_not_allowed(path, "GET")
        else:
            self._not_found(path)

    def _method_not_allowed(self, path: str, allow: str) -> None:
        self._json(405, {"code": 5, "message": "method not allowed"}, {"Allow": allow})

    def _not_found(self, path: str) -> None:
        """Unknown path: code 5. An API call (counted, with truthful rate headers) that is
        never limited, faulted, delayed or charged to the token."""
        sb = self.sb
        headers, _ = sb._rate(sb._client_of(_bearer(self.headers)), count=True, limit=False)
        with sb._lock:
            sb._api_requests += 1
        sb._tick()
        self._json(404, {"code": 5, "message": "invalid URL path"}, headers)

    # ---------- token endpoint ----------
    def _token(self, body: bytes) -> None:
        cfg = self.sb.config
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                             keep_blank_values=True).items()}
        if (form.get("client_id") != cfg.client_id
                or not secrets.compare_digest(form.get("client_secret", ""), cfg.client_secret)):
            status, payload = 401, {"error": "invalid_client",
                                    "error_description": "Client authentication failed."}
        elif form.get("grant_type") != "refresh_token":
            status, payload = 400, {"error": "unsupported_grant_type"}
        elif not secrets.compare_digest(form.get("refresh_token", ""), cfg.refresh_token):
            status, payload = 400, {
                "error": "invalid_grant",
                "error_description": "The refresh token is invalid or has been revoked."}
        elif cfg.malformed == "token_without_access_token":
            status, payload = 200, {"token_type": "Bearer", "expires_in": 3600, "scope": SCOPE}
        else:
            status, payload = 200, self.sb._issue_token(cfg.client_id)
        self._json(status, payload, {"Cache-Control": "no-store"})

    # ---------- list endpoints ----------
    def _api(self, path: str, query: str) -> None:
        endpoint = BY_PATH.get(path)
        if endpoint is None:
            self._not_found(path)
            return
        sb = self.sb
        token = _bearer(self.headers)
        if sb.config.latency > 0:
            time.sleep(sb.config.latency)
        headers, limited = sb._rate(sb._client_of(token), count=True)
        fault = None if limited else sb._draw_fault()
        if fault is not None and fault[0] == "slow":  # stall, then answer as usual
            time.sleep(sb.config.slow_seconds)
            fault = None
        if limited:
            with sb._lock:
                sb._api_requests += 1
            sb._tick()
            self._error(429, 44, "rate limit exceeded", headers)
        elif fault is not None:
            self._fault(*fault, headers)
        elif not sb._authorize(token):
            sb._tick()
            self._error(401, 57, "invalid or expired access token", headers)
        else:
            self._list(endpoint, query, headers)

    def _error(self, status: int, code: int, message: str, headers: dict[str, str]) -> None:
        self._json(status, {"code": code, "message": message}, headers)

    def _fault(self, kind: str, style: str, headers: dict[str, str]) -> None:
        """Answer like a failing server or proxy would."""
        self.sb._tick()
        if kind == "close":
            self.sb._count(self._split()[0], "closed")
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        status = int(kind)
        if status == 429:  # a burst from an upstream limiter, with a short Retry-After
            retry = {"Retry-After": str(self.sb.config.retry_after)}
            self._error(429, 44, "rate limit exceeded", {**headers, **retry})
        elif status == 500:
            self._error(500, 1, "internal error", headers)
        elif style == "json":
            self._error(status, 3, "service temporarily unavailable", headers)
        elif style == "html":
            html = _HTML.format(status=status, phrase=HTTPStatus(status).phrase)
            self._send(status, html.encode(), "text/html; charset=utf-8", headers)
        else:
            self._send(status, b"", None, headers)

    def _list(self, endpoint: Endpoint, query: str, headers: dict[str, str]) -> None:
        params = parse_qs(query, keep_blank_values=True)
        try:
            page = _int_param(params, "page", 1, 1, None)
            per_page = _int_param(params, "per_page", 200, 1, 200)
            since = _since_param(params)
        except ValueError as exc:
            self.sb._tick()
            self._error(400, 2, str(exc), headers)
            return
        if self.sb.config.malformed in _LIST_MALFORMED:
            self._malformed(endpoint, page, per_page, since, headers)
            return
        blobs, more = self.sb.tables[endpoint.name].page(page, per_page, since)
        body = b"".join((
            b'{"code":0,"message":"success","', endpoint.data_selector.encode(), b'":[',
            b",".join(blobs),
            b'],"page_context":{"page":%d,"per_page":%d,"has_more_page":%s}}'
            % (page, per_page, b"true" if more else b"false"),
        ))
        self.sb._tick()  # a due mutation lands after this page was assembled
        self._send(200, body, "application/json; charset=utf-8", headers)

    def _malformed(self, endpoint: Endpoint, page: int, per_page: int, since: float | None,
                   headers: dict[str, str]) -> None:
        """A 200 that a broken API (or a wrong URL) gives: wrong body, wrong envelope, no end."""
        kind = self.sb.config.malformed
        self.sb._tick()
        if kind == "not_json":
            self._send(200, _NOT_JSON, "text/html; charset=utf-8", headers)
            return
        if kind == "error_code":
            self._error(200, 1002, "organization does not exist", headers)  # 200, code != 0
            return
        context = {"page": page, "per_page": per_page, "has_more_page": True}
        if kind == "no_selector":
            context["has_more_page"] = False
            self._json(200, {"code": 0, "message": "success", "page_context": context}, headers)
            return
        # endless: every page is full and says more follow (records repeat cyclically)
        table = self.sb.tables[endpoint.name]
        blobs = table.page(1, 10**9, since)[0] or table.all_blobs()
        start = (page - 1) * per_page
        page_blobs = [blobs[(start + i) % len(blobs)] for i in range(per_page)] if blobs else []
        body = b"".join((
            b'{"code":0,"message":"success","', endpoint.data_selector.encode(), b'":[',
            b",".join(page_blobs), b'],"page_context":', json.dumps(context).encode(), b"}",
        ))
        self._send(200, body, "application/json; charset=utf-8", headers)

    # ---------- admin API ----------
    def _admin(self, method: str, path: str, body: bytes) -> None:
        """Control endpoints for tests and demos; never counted, limited or faulted."""
        sb = self.sb
        action = path[len(ADMIN_PREFIX):]
        try:
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise ValueError("the body must be a JSON object")
            if method == "GET" and action == "stats":
                result: Any = sb.stats()
            elif method == "GET" and action == "config":
                result = dataclasses.asdict(sb.config)
            elif method == "POST" and action == "config":
                result = dataclasses.asdict(sb.configure(**args))
            elif method == "POST" and action == "mutate":
                name = args.pop("resource", None) or args.pop("name", None)
                result = sb.mutate(str(name), **args)
            elif method == "POST" and action == "revoke-tokens":
                result = {"revoked": sb.revoke_tokens()}
            elif method == "POST" and action == "reset-stats":
                sb.reset_stats()
                result = {}
            elif method == "GET" and action.startswith("records/"):
                name = action.removeprefix("records/")
                blobs = sb.tables[BY_NAME[name].name].all_blobs()
                self._send(200, b"[" + b",".join(blobs) + b"]", "application/json")
                return
            else:
                self._json(404, {"error": f"unknown admin call {method} {path}"})
                return
        except (ValueError, TypeError, KeyError) as exc:
            self._json(400, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._json(200, result)


def _bearer(headers: Any) -> str | None:
    value = headers.get("Authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _int_param(params: dict[str, list[str]], name: str, default: int, low: int,
               high: int | None) -> int:
    """An integer query parameter within bounds; anything else is a code-2 error."""
    if name not in params:
        return default
    text = params[name][0]
    if not _INTEGER.match(text):
        raise ValueError(f"Invalid value passed for {name}")
    value = int(text)
    if value < low or (high is not None and value > high):
        raise ValueError(f"Invalid value passed for {name}")
    return value


def _since_param(params: dict[str, list[str]]) -> float | None:
    """modified_since as an instant; RFC 3339 with an offset, else a code-2 error."""
    if "modified_since" not in params:
        return None
    text = params["modified_since"][0]
    if not _RFC3339.match(text):
        raise ValueError("Invalid value passed for modified_since")
    try:
        return dt.datetime.fromisoformat(text.upper()).timestamp()
    except ValueError as exc:
        raise ValueError("Invalid value passed for modified_since") from exc


