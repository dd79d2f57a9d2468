"""Property-based ids (hypothesis) through the Flask app with the memory store: whatever
the id, the answer is 200 (valid id) or 400 (anything else), JSON, never a 5xx, never a
traceback."""

import re
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnomatic import create_app

VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@pytest.fixture(scope="module")
def client():
    return create_app({"STORE": "memory://"}).test_client()


def check(response, id):
    assert response.status_code in (200, 400), (id, response.status_code)
    assert response.content_type == "application/json"
    assert "Traceback" not in response.get_data(as_text=True)
    if VALID_ID.fullmatch(id):
        assert response.status_code == 200
        assert response.json["id"] == id
        assert 1 <= response.json["turno"]
    else:
        assert response.json["error"] == "bad_id"


@settings(max_examples=400, deadline=None)
@given(id=st.text(max_size=100))
def test_any_text_id_percent_encoded(client, id):
    check(client.get("/turno/" + quote(id, safe="")), id)


@settings(max_examples=200, deadline=None)
@given(id=st.text(alphabet=st.characters(codec="ascii"), max_size=80))
def test_any_ascii_id_as_is(client, id):
    """Sent without encoding: slashes split the path, '?' starts a query, %xx decodes."""
    response = client.get("/turno/" + id)
    assert response.status_code in (200, 400), (id, response.status_code)
    assert response.content_type == "application/json"
    assert "Traceback" not in response.get_data(as_text=True)
    if response.status_code == 200:
        assert VALID_ID.fullmatch(response.json["id"])


@settings(max_examples=200, deadline=None)
@given(id=st.from_regex(VALID_ID, fullmatch=True))
def test_every_valid_id_counts(client, id):
    first = client.get(f"/turno/{id}").json["turno"]
    assert client.get(f"/turno/{id}").json == {"id": id, "turno": first + 1}
