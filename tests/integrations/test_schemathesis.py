"""schemathesis against the committed schema (docs/openapi.yaml) on the live test server,
with an API token: no 5xx, every status code documented, responses as the schema says.
Bounded: a few examples per operation, no shrinking, a deadline per test."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cases.roles import Role
from integrations import services as token_services
from tests.conftest import REPO_ROOT, make_user
from tests.factories import ScanFactory

schema = schemathesis.openapi.from_path(REPO_ROOT / "docs" / "openapi.yaml")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def token_headers(live_url, settings, tmp_path) -> dict[str, str]:
    settings.MEDIA_ROOT = str(tmp_path)
    user = make_user("fuzz", Role.CLINICIAN, Role.GRADER_T1, Role.GRADER_T3)
    ScanFactory()  # one record of each kind, so that some ids exist
    _, secret = token_services.token_create(user=user, name="schemathesis", scope="write", days=1)
    return {"Authorization": f"Bearer {secret}"}


@schema.parametrize()
@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_schema(case, live_url, token_headers):
    case.call_and_validate(base_url=live_url, headers=token_headers, checks=CHECKS, timeout=30)
