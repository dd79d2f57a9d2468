"""Unexpected values, sent while a load step runs: each must get its documented status.

The statuses are the service's (app/turnomatic/openapi.yaml, README): a malformed
id 400, an unknown path 404, a method other than GET 405, a counter at 2^53-1
409. Some requests never reach the app behind a balancer: nginx answers an
over-long request line 414 and over-large headers 400 (waitress answers 431), so
those cases accept either. None may get a 5xx, and the target must be healthy
afterwards.

Requests go out on raw sockets so that the bytes on the wire are exactly the odd
ones (an HTTP library would normalise or refuse them).
"""

import json
import secrets
import socket
import time
from urllib.parse import urlsplit

MAX_SAFE_INTEGER = 2**53 - 1
ANSWER_TIMEOUT_S = 5
MAX_ANSWER_BYTES = 1 << 20


def cases(tag: str) -> list[dict]:
    """(name, method, path, extra header lines, accepted statuses); tag makes ids fresh."""
    def case(name, path, expected, method="GET", headers=()):
        return {"name": name, "method": method, "path": path, "headers": list(headers),
                "expected": set(expected)}

    return [
        case("empty id `/turno/`", "/turno/", {400}),
        case("no id `/turno`", "/turno", {400}),
        case("encoded slash `a%2Fb`", "/turno/a%2Fb", {400}),
        case("raw slash `a/b`", "/turno/a/b", {400}),
        case("dot-dot `..`", "/turno/..", {400, 404}),
        case("encoded dot-dot `%2e%2e`", "/turno/%2e%2e", {400, 404}),
        case("leading dot `.hidden`", "/turno/.hidden", {400}),
        case("unicode, encoded", "/turno/%C3%B1and%C3%BA", {400}),
        case("unicode, raw UTF-8 bytes", "/turno/ñandú".encode().decode("latin-1"), {400}),
        case("65 characters", "/turno/" + "a" * 65, {400}),
        case("10 kB id", "/turno/" + "x" * 10_000, {400, 414}),
        case("SQL-looking `1' OR '1'='1`", "/turno/1'%20OR%20'1'='1", {400}),
        case("script tag", "/turno/%3Cscript%3Ealert(1)%3C%2Fscript%3E", {400}),
        case("shell `$(reboot)`", "/turno/$(reboot)", {400}),
        case("CRLF injection", "/turno/a%0d%0aSet-Cookie:x=1", {400}),
        case("NUL byte", "/turno/a%00b", {400}),
        case("Redis key trick `*`", "/turno/*", {400}),
        case("64 characters (valid)", "/turno/" + f"odd-{tag}-".ljust(64, "z"), {200}),
        case("query string (ignored)", f"/turno/odd-{tag}-q?turno=999&id=other", {200}),
        case("unknown path", "/turnos/x", {404}),
        case("POST", f"/turno/odd-{tag}-m", {405}, method="POST", headers=["Content-Length: 0"]),
        case("PUT", f"/turno/odd-{tag}-m", {405}, method="PUT", headers=["Content-Length: 0"]),
        case("DELETE", f"/turno/odd-{tag}-m", {405}, method="DELETE"),
        case("PATCH", f"/turno/odd-{tag}-m", {405}, method="PATCH", headers=["Content-Length: 0"]),
        case("HEAD", f"/turno/odd-{tag}-m", {405}, method="HEAD"),
        case("unknown method BREW", f"/turno/odd-{tag}-m", {400, 405, 501}, method="BREW"),
        case("16 kB header", f"/turno/odd-{tag}-h", {200, 400, 431},
             headers=["X-Padding: " + "p" * 16_384]),
        case("300 kB header", f"/turno/odd-{tag}-h", {400, 431},
             headers=["X-Padding: " + "p" * 300_000]),
        case("200 headers", f"/turno/odd-{tag}-h", {200, 400, 431},
             headers=[f"X-Many-{n}: {n}" for n in range(200)]),
    ]


def send_raw(host: str, port: int, method: str, path: str, headers: list[str]) -> tuple[int, bytes]:
    """One request on its own connection; (status, body), status 0 when there was no answer."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", *headers]
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    answer = b""
    try:
        with socket.create_connection((host, port), timeout=ANSWER_TIMEOUT_S) as connection:
            connection.sendall(request)
            while len(answer) < MAX_ANSWER_BYTES:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        if not answer:  # a server may reset a connection it answered, before reading the rest
            return 0, b""
    status_line, _, rest = answer.partition(b"\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return 0, answer[:200]
    return int(parts[1]), rest.partition(b"\r\n\r\n")[2]


def run_odd_requests(target: str, delay_s: float = 0, seed=None) -> dict:
    """Send every case (after delay_s, so a load step is running); seed(key, value) sets a
    Redis key for the 2^53-1 cases, or None to skip them. Returns the results and health."""
    url = urlsplit(target)
    host, port = url.hostname, url.port or 80
    tag = secrets.token_hex(3)
    time.sleep(delay_s)
    results = []
    for c in cases(tag):
        status, _ = send_raw(host, port, c["method"], c["path"], c["headers"])
        results.append({"name": c["name"], "expected": sorted(c["expected"]), "status": status,
                        "ok": status in c["expected"]})
    if seed is not None:
        results += near_max_cases(host, port, tag, seed)
    health = {path: send_raw(host, port, "GET", path, [])[0] for path in ("/healthz", "/readyz")}
    return {"results": results, "health": health,
            "passed": all(r["ok"] for r in results) and set(health.values()) == {200}}


def near_max_cases(host: str, port: int, tag: str, seed) -> list[dict]:
    """Counters seeded next to 2^53-1, and one next to Redis's own 2^63-1 limit."""
    results = []
    near_safe, near_int64 = f"odd-{tag}-max", f"odd-{tag}-int64"
    seed(f"turno:{near_safe}", MAX_SAFE_INTEGER - 1)
    seed(f"turno:{near_int64}", 2**63 - 2)
    for name, ident, expected, turno in [
        ("seeded 2^53-2, next", near_safe, 200, MAX_SAFE_INTEGER),
        ("seeded 2^53-2, past the limit", near_safe, 409, None),
        ("seeded 2^53-2, again past it", near_safe, 409, None),
        ("seeded 2^63-2", near_int64, 409, None),
    ]:
        status, body = send_raw(host, port, "GET", f"/turno/{ident}", [])
        ok = status == expected
        if ok and turno is not None:
            ok = json.loads(body).get("turno") == turno
        results.append({"name": name, "expected": [expected], "status": status, "ok": ok})
    return results
