"""The OpenAPI description (app/turnomatic/openapi.yaml) checked against the running
service by schemathesis: generated valid and invalid requests, every response checked
against the documented statuses, content types and schemas; no 5xx."""

from importlib.resources import files

import hypothesis
import schemathesis

schema = schemathesis.openapi.from_path(str(files("turnomatic") / "openapi.yaml"))


@schema.parametrize()
@hypothesis.settings(max_examples=60, deadline=None)
def test_service_matches_its_openapi_description(case, memory_service):
    case.call_and_validate(base_url=f"http://{memory_service.base}")
