"""The API over real HTTP (waitress): answers, the id grammar and the bad-input table."""

import socket

import pytest

from tests.support.service import get

ID_RULE_MESSAGE = "id must be 1 to 64 characters of A-Z a-z 0-9 . _ -, the first a letter or digit"


def test_first_call_answers_one_then_counts(memory_service):
    status, headers, body = get(memory_service.base, "/turno/grupo1")
    assert (status, body) == (200, {"id": "grupo1", "turno": 1})
    assert headers["Content-Type"] == "application/json"
    assert get(memory_service.base, "/turno/grupo1")[2] == {"id": "grupo1", "turno": 2}


def test_ids_are_case_sensitive_and_independent(memory_service):
    assert get(memory_service.base, "/turno/Caja")[2]["turno"] == 1
    assert get(memory_service.base, "/turno/caja")[2]["turno"] == 1
    assert get(memory_service.base, "/turno/Caja")[2]["turno"] == 2


@pytest.mark.parametrize("id", ["a", "Z9", "0", "a.b_c-d", "x" * 64, "1..", "v1.2.3"])
def test_valid_ids(memory_service, id):
    assert get(memory_service.base, f"/turno/{id}")[:3:2] == (200, {"id": id, "turno": 1})


def test_query_string_is_ignored(memory_service):
    assert get(memory_service.base, "/turno/q1?turno=99&x=%2F")[2] == {"id": "q1", "turno": 1}
    assert get(memory_service.base, "/turno/q1?")[2] == {"id": "q1", "turno": 2}


# path -> why it is refused; every one answers 400 bad_id with the rule.
BAD_IDS = {
    "/turno/": "empty id",
    "/turno": "no id at all",
    "/turno/%2F": "percent-encoded slash alone",
    "/turno/a%2Fb": "percent-encoded slash inside",
    "/turno/a/b": "slash",
    "/turno//a": "empty segment",
    "/turno/a/": "trailing slash",
    "/turno/..": "dot-dot",
    "/turno/.": "dot",
    "/turno/%2E%2E": "encoded dot-dot",
    "/turno/.hidden": "leading dot",
    "/turno/-a": "leading dash",
    "/turno/_a": "leading underscore",
    "/turno/" + "x" * 65: "65 characters",
    "/turno/" + "x" * 10_000: "10 kB id",
    "/turno/%C3%B1and%C3%BA": "unicode (percent-encoded UTF-8)",
    "/turno/%E2%80%AEabc": "unicode right-to-left override",
    "/turno/%F0%9F%8E%AB": "emoji",
    "/turno/%FF%FE": "bytes that are not UTF-8",
    "/turno/a%00b": "NUL byte",
    "/turno/a%0D%0ASet-Cookie:x": "CR LF (header/log injection)",
    "/turno/a%20b": "space",
    "/turno/a+b": "plus",
    "/turno/a%25": "percent sign",
    "/turno/%27%20OR%201=1": "SQL-looking",
    "/turno/*": "Redis glob character",
    "/turno/a:b": "colon",
}


@pytest.mark.parametrize("path", BAD_IDS, ids=lambda path: BAD_IDS[path])
def test_bad_ids_get_400_stating_the_rule(memory_service, path):
    status, headers, body = get(memory_service.base, path)
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert body == {"error": "bad_id", "message": ID_RULE_MESSAGE}


def test_bad_requests_are_logged_one_line_each_without_traceback(memory_service):
    get(memory_service.base, "/turno/bad%0Aline")
    get(memory_service.base, "/turno/" + "y" * 10_000)
    log = memory_service.log()
    assert "GET '/turno/bad\\nline' -> 400 bad_id: id must be" in log
    assert "... (10007 characters) -> 400 bad_id" in log
    assert "y" * 200 not in log
    assert "Traceback" not in log


@pytest.mark.parametrize("path", ["/", "/nope", "/turnos/a", "/healthz/x", "/TURNO/a", "/openapi.yaml"])
def test_unknown_paths_get_json_404(memory_service, path):
    status, _, body = get(memory_service.base, path)
    assert status == 404
    assert body["error"] == "not_found"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_json_405_and_count_nothing(memory_service, method):
    status, headers, body = get(memory_service.base, f"/turno/m-{method}", method=method)
    assert status == 405
    assert body["error"] == "method_not_allowed"
    assert "GET" in headers["Allow"]
    assert get(memory_service.base, f"/turno/m-{method}")[2]["turno"] == 1


def test_head_is_refused_because_it_would_use_up_a_number(memory_service):
    status, headers, body = get(memory_service.base, "/turno/h1", method="HEAD")
    assert status == 405
    assert headers["Allow"] == "GET"
    assert body is None  # HEAD never has a body
    assert get(memory_service.base, "/turno/h1")[2]["turno"] == 1


def test_health_and_readiness(memory_service):
    assert get(memory_service.base, "/healthz")[:3:2] == (200, {"status": "ok"})
    assert get(memory_service.base, "/readyz")[:3:2] == (200, {"status": "ready"})


def test_raw_non_ascii_bytes_in_the_path_are_refused_by_waitress(memory_service):
    """Not valid HTTP: waitress answers its own plain-text 400 before the app runs."""
    host, port = memory_service.base.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall("GET /turno/caf\u00e9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b"".join(iter(lambda: connection.recv(4096), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"Bad URI" in body
    assert get(memory_service.base, "/healthz")[0] == 200


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/turno/cache1", 200), ("GET", "/turno/", 400), ("GET", "/turno/a/b", 400),
    ("POST", "/turno/cache1", 405), ("HEAD", "/turno/cache1", 405), ("GET", "/readyz", 200), ("GET", "/nope", 404),
])
def test_no_answer_may_be_stored(memory_service, method, path, status):
    """A shared cache or a prefetcher replaying a /turno answer would show one number twice."""
    answer_status, headers, _ = get(memory_service.base, path, method=method)
    assert answer_status == status
    assert headers["Cache-Control"] == "no-store"
