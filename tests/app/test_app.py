"""The Flask app in-process (Flask's test client): the memory store's limit and the
handler of unexpected errors."""

import logging

from turnomatic import create_app
from turnomatic.store import MAX_TURNO


def test_memory_store_stops_at_2_53_minus_1_and_keeps_the_counter():
    app = create_app({"STORE": "memory://"})
    app.extensions["store"].counters["edge"] = MAX_TURNO - 1
    client = app.test_client()
    assert client.get("/turno/edge").json == {"id": "edge", "turno": MAX_TURNO}
    response = client.get("/turno/edge")
    assert response.status_code == 409
    assert response.json["error"] == "counter_exhausted"
    assert app.extensions["store"].counters["edge"] == MAX_TURNO


def test_unexpected_error_is_json_500_with_the_traceback_only_in_the_log(caplog):
    app = create_app({"STORE": "memory://"})

    def broken():
        raise RuntimeError("something nobody planned for")

    app.add_url_rule("/broken", view_func=broken)
    with caplog.at_level(logging.ERROR, logger="turnomatic.web"):
        response = app.test_client().get("/broken")
    assert response.status_code == 500
    assert response.json == {"error": "internal_error", "message": "unexpected error; it is logged"}
    assert "RuntimeError" not in response.get_data(as_text=True)
    assert "GET '/broken' -> 500 internal_error" in caplog.text
    assert "RuntimeError: something nobody planned for" in caplog.text  # the traceback
