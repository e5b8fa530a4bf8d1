"""Every malformed API request gets a 4xx {"detail": ...} JSON answer, never a 500 or HTML."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse

from cases.roles import Role
from tests.factories import CaseFactory, ScanFactory, bscan_bytes


def assert_json_detail(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body, dict) and body.get("detail"), body
    return body


@pytest.fixture
def api(api_client, clinician):
    api_client.force_authenticate(clinician)
    return api_client


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["status=%00", "case=%00", "q=KER%00", "%00=1"])
def test_a_nul_byte_in_a_query_parameter_is_a_400(api, query):
    url = "/api/patients/" if query.startswith("q=") else "/api/scans/"
    assert_json_detail(api.get(f"{url}?{query}"), 400)


@pytest.mark.django_db
def test_a_nul_byte_in_a_page_query_is_a_400_page(client, clinician):
    client.force_login(clinician)
    response = client.get("/patients/?q=%00")
    assert response.status_code == 400
    assert "NUL" in response.content.decode()


@pytest.mark.django_db
def test_a_json_array_as_a_grade_body_is_a_400(api_client, grader_t1):
    scan = ScanFactory()
    api_client.force_authenticate(grader_t1)
    url = reverse("verification-api:grade_submit", args=[scan.pk])
    body = assert_json_detail(api_client.post(url, "[]", content_type="application/json"), 400)
    assert "JSON object" in body["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("payload", ["1", '"text"', "null", "[1, 2]"])
def test_a_json_body_that_is_not_an_object_is_a_400(api, payload):
    assert_json_detail(api.post("/api/patients/", payload, content_type="application/json"), 400)


@pytest.mark.django_db
def test_json_nested_100000_deep_is_a_400(api):
    body = "[" * 100_000 + "]" * 100_000
    assert_json_detail(api.post("/api/patients/", body, content_type="application/json"), 400)
    deep_object = '{"a":' * 100_000 + "1" + "}" * 100_000
    assert_json_detail(api.post("/api/cases/", deep_object, content_type="application/json"), 400)


@pytest.mark.django_db
def test_broken_json_and_bad_utf8_are_a_400(api):
    assert_json_detail(api.post("/api/patients/", "{", content_type="application/json"), 400)
    assert_json_detail(api.post("/api/patients/", b"\xff\xfe{}", content_type="application/json"), 400)


@pytest.mark.django_db
def test_brackets_inside_strings_do_not_count_as_nesting(api):
    response = api.post("/api/patients/", {"identifier": "P-1", "notes": "[" * 500}, format="json")
    assert response.status_code == 201


def _files(n: int) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(f"b{i}.png", bscan_bytes(seed=i), content_type="image/png") for i in range(n)]


@pytest.mark.django_db
def test_101_files_in_one_api_upload_get_the_batch_limit_message(api, settings):
    assert settings.OCT_UPLOAD_MAX_FILES == 100
    case = CaseFactory()
    response = api.post(f"/api/cases/{case.pk}/scans/", {"files": _files(101)}, format="multipart")
    body = assert_json_detail(response, 400)
    assert "Too many files in one upload" in body["detail"] and "the limit is 100" in body["detail"]
    assert not case.scans.exists()


@pytest.mark.django_db
def test_101_files_on_the_upload_page_get_a_readable_message(client, clinician):
    case = CaseFactory()
    client.force_login(clinician)
    response = client.post(reverse("cases:scan_upload", args=[case.pk]), {"files": _files(101)})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert "Too many files in one upload" in text and "the limit is 100" in text
    assert not case.scans.exists()


@pytest.mark.django_db
def test_the_batch_limit_follows_the_setting(api):
    with override_settings(OCT_UPLOAD_MAX_FILES=3, DATA_UPLOAD_MAX_NUMBER_FILES=3):
        case = CaseFactory()
        body = assert_json_detail(api.post(f"/api/cases/{case.pk}/scans/", {"files": _files(4)},
                                           format="multipart"), 400)
        assert "the limit is 3" in body["detail"]


@pytest.mark.django_db
def test_too_many_form_fields_is_a_400_json(api):
    with override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=10):
        data = "&".join(f"f{i}=1" for i in range(20))
        response = api.post("/api/patients/", data, content_type="application/x-www-form-urlencoded")
        assert_json_detail(response, 400)


@pytest.mark.django_db
def test_an_unknown_api_url_is_a_json_404(api):
    assert_json_detail(api.get("/api/no-such-endpoint/"), 404)


@pytest.mark.django_db
def test_an_unhandled_error_under_the_api_is_a_json_500_without_details(api, monkeypatch):
    from cases import selectors

    def boom(**kwargs):
        raise RuntimeError("secret internals KER-103044")

    monkeypatch.setattr(selectors, "patient_list", boom)
    api.raise_request_exception = False
    response = api.get("/api/patients/")
    body = assert_json_detail(response, 500)
    assert body == {"detail": "Internal server error."}


@pytest.mark.django_db
def test_an_anonymous_api_request_is_json(api_client):
    assert_json_detail(api_client.get("/api/scans/"), 403)


@pytest.mark.django_db
def test_a_wrong_role_api_request_is_json(api_client, user_factory):
    api_client.force_authenticate(user_factory("g1", Role.GRADER_T1))
    assert_json_detail(api_client.get("/api/patients/"), 403)


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["case=99999999999999999999999", "case=-1", "case=x"])
def test_an_id_filter_beyond_a_database_integer_is_a_400(api, query):
    body = assert_json_detail(api.get(f"/api/scans/?{query}"), 400)
    assert body["detail"] == "case: Must be an integer id."


@pytest.mark.django_db
def test_field_errors_carry_a_detail_beside_the_errors_by_field(api):
    body = assert_json_detail(api.post("/api/patients/", {"identifier": "x", "birth_year": "abc"}, format="json"), 400)
    assert body["detail"] == "birth_year: A valid integer is required."
    assert body["errors"]["birth_year"] == ["A valid integer is required."]


@pytest.mark.django_db
@pytest.mark.parametrize("payload", [{"tier": [1]}, {"tier": {"a": 1}}, {"tier": "1e9"}, {}, {"tier": 1, "label": ["x"]}])
def test_malformed_grade_bodies_are_a_400_with_a_detail(api_client, user_factory, payload):
    grader = user_factory("g", Role.GRADER_T1, Role.GRADER_T2, Role.GRADER_T3)
    api_client.force_authenticate(grader)
    url = reverse("verification-api:grade_submit", args=[ScanFactory().pk])
    assert_json_detail(api_client.post(url, payload, format="json"), 400)


@pytest.mark.django_db
def test_a_filter_value_the_database_cannot_hold_is_a_400_not_a_500(api_client, clinician):
    """Found by schemathesis on PostgreSQL: a datetime at UTC-16:19 is out of its range."""
    api_client.force_authenticate(clinician)
    response = api_client.get("/api/v1/scans/", {"uploaded_before": "0902-06-25T10:24:46-16:19",
                                                  "uploaded_after": "0137-09-06T11:12:41+15:59"})
    assert response.status_code in (200, 400) and response["Content-Type"].startswith("application/json")  # 400 on PostgreSQL
    assert "detail" in response.json() or "results" in response.json()
