"""The committed OpenAPI schema (docs/openapi.yaml) is the one the code generates; its viewers load without a CDN."""
from __future__ import annotations

import pytest
import yaml
from django.contrib.staticfiles import finders
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiYamlRenderer

from tests.conftest import REPO_ROOT

COMMITTED = REPO_ROOT / "docs" / "openapi.yaml"
REGENERATE = (
    "DJANGO_SETTINGS_MODULE=octportal.settings.test .venv/bin/python manage.py spectacular "
    "--api-version v1 --file docs/openapi.yaml --validate"
)


def generated() -> str:
    schema = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)
    return OpenApiYamlRenderer().render(schema, renderer_context={}).decode()


def test_the_committed_schema_is_the_generated_one():
    assert COMMITTED.read_text() == generated(), f"docs/openapi.yaml is out of date; regenerate it: {REGENERATE}"


def test_the_schema_documents_every_v1_endpoint_with_its_errors():
    schema = yaml.safe_load(COMMITTED.read_text())
    paths = schema["paths"]
    for path in ("/api/v1/patients/", "/api/v1/cases/{id}/scans/", "/api/v1/scans/{id}/reading/",
                 "/api/v1/verification/worklist/{tier}/", "/api/v1/volumes/{id}/reading/", "/api/v1/model-versions/"):
        assert path in paths, path
    for path, operations in paths.items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"401", "403", "429"} <= codes, (method, path)
            assert any(c.startswith("2") for c in codes), (method, path)
    assert paths["/api/v1/cases/{id}/scans/"]["post"]["responses"].keys() >= {"202", "404", "413"}
    assert "examples" in paths["/api/v1/patients/"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["components"]["securitySchemes"]["apiToken"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["apiToken"]["description"]
    }


@pytest.mark.django_db
def test_the_schema_is_served_to_signed_in_users(api_client, clinician):
    assert api_client.get("/api/v1/schema/").status_code == 403
    api_client.force_authenticate(clinician)
    response = api_client.get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    assert "/api/v1/patients/" in response.json()["paths"]


@pytest.mark.django_db
@pytest.mark.parametrize("page, assets", [
    ("/api/v1/docs/", ["swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-dist/swagger-ui.css"]),
    ("/api/v1/redoc/", ["redoc/bundles/redoc.standalone.js"]),
])
def test_the_viewers_load_their_assets_from_this_server(client, clinician, page, assets):
    client.force_login(clinician)
    response = client.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert "https://" not in html and "<style" not in html
    for asset in assets:
        assert f"/static/drf_spectacular_sidecar/{asset}" in html
        assert finders.find(f"drf_spectacular_sidecar/{asset}")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "cdn" not in csp
    # Only ReDoc (run-time styles) gets inline style elements; no page gets inline scripts.
    assert ("'unsafe-inline'" in csp.split("style-src-elem")[1].split(";")[0]) == page.endswith("redoc/")


@pytest.mark.django_db
def test_swaggers_init_script_is_served_by_the_view(client, clinician):
    client.force_login(clinician)
    response = client.get("/api/v1/docs/?script=")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/javascript")
    assert "/api/v1/schema/" in response.content.decode()
