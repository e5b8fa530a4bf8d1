"""Django admin: every records page renders for admins; others are kept out."""
from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import ScanFactory


@pytest.fixture
def scan(db):
    return ScanFactory()


def admin_pages(scan) -> list[str]:
    return [
        reverse("admin:cases_patient_changelist"),
        reverse("admin:cases_patient_change", args=[scan.case.patient_id]),
        reverse("admin:cases_patient_add"),
        reverse("admin:cases_case_changelist"),
        reverse("admin:cases_case_change", args=[scan.case_id]),
        reverse("admin:cases_scan_changelist"),
        reverse("admin:cases_scan_change", args=[scan.pk]),
        reverse("admin:cases_patient_changelist") + "?q=P-",
        reverse("admin:cases_scan_changelist") + "?status__exact=received",
    ]


def test_admin_pages_render(client, admin, scan):
    client.force_login(admin)
    for url in admin_pages(scan):
        assert client.get(url).status_code == 200, url


def test_scan_change_page_links_the_private_image_view(client, admin, scan):
    client.force_login(admin)
    html = client.get(reverse("admin:cases_scan_change", args=[scan.pk])).content.decode()
    assert reverse("cases:scan_image", args=[scan.pk]) in html


def test_scans_cannot_be_added_in_the_admin(client, admin, scan):
    client.force_login(admin)
    assert client.get(reverse("admin:cases_scan_add")).status_code == 403


@pytest.mark.parametrize("role", ["clinician", "grader_t1", "no_role_user"])
def test_non_staff_are_sent_to_the_admin_login(client, scan, role, request):
    client.force_login(request.getfixturevalue(role))
    response = client.get(reverse("admin:cases_patient_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_anonymous_is_sent_to_the_admin_login(client, scan):
    response = client.get(reverse("admin:cases_scan_changelist"))
    assert response.status_code == 302
