"""The client address: REMOTE_ADDR unless it is a trusted proxy; then the right-most untrusted hop."""
from __future__ import annotations

from pathlib import Path

import pytest
from auditlog.models import LogEntry
from axes.models import AccessAttempt
from django.test import RequestFactory
from django.urls import reverse

from octportal.security import client_ip
from tests.factories import ScanFactory

REPO = Path(__file__).resolve().parents[2]


def request(remote: str, xff: str | None = None):
    meta = {"REMOTE_ADDR": remote}
    if xff is not None:
        meta["HTTP_X_FORWARDED_FOR"] = xff
    return RequestFactory().get("/", **meta)


def test_without_trusted_proxies_the_forwarded_header_is_ignored(settings):
    settings.OCT_TRUSTED_PROXIES = []
    assert client_ip(request("198.51.100.4", "1.2.3.4")) == "198.51.100.4"


def test_a_forwarded_header_from_an_untrusted_peer_is_ignored(settings):
    settings.OCT_TRUSTED_PROXIES = ["10.0.0.5"]
    assert client_ip(request("198.51.100.4", "1.2.3.4")) == "198.51.100.4"


def test_behind_a_trusted_proxy_the_forwarded_address_is_used(settings):
    settings.OCT_TRUSTED_PROXIES = ["10.0.0.5"]
    assert client_ip(request("10.0.0.5", "203.0.113.9")) == "203.0.113.9"


def test_a_client_cannot_prepend_a_fake_address(settings):
    settings.OCT_TRUSTED_PROXIES = ["10.0.0.0/24"]
    # The client sent "X-Forwarded-For: 6.6.6.6"; an appending proxy added the real address.
    assert client_ip(request("10.0.0.5", "6.6.6.6, 203.0.113.9")) == "203.0.113.9"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right(settings):
    settings.OCT_TRUSTED_PROXIES = ["10.0.0.0/8", "192.168.1.1"]
    assert client_ip(request("10.0.0.5", "6.6.6.6, 203.0.113.9, 192.168.1.1, 10.1.2.3")) == "203.0.113.9"


def test_garbage_in_the_header_stops_the_walk(settings):
    settings.OCT_TRUSTED_PROXIES = ["10.0.0.5"]
    assert client_ip(request("10.0.0.5", "203.0.113.9, not-an-ip")) == "10.0.0.5"
    assert client_ip(request("10.0.0.5", "")) == "10.0.0.5"


def test_ports_and_ipv6_are_understood(settings):
    settings.OCT_TRUSTED_PROXIES = ["10.0.0.5", "fd00::/8"]
    assert client_ip(request("10.0.0.5", "203.0.113.9:4711")) == "203.0.113.9"
    assert client_ip(request("fd00::1", "[2001:db8::7]:443")) == "2001:db8::7"
    assert client_ip(request("fd00::1", "2001:db8::8")) == "2001:db8::8"


@pytest.mark.django_db
def test_the_audit_records_the_real_address_not_a_forged_header(client, clinician, settings):
    settings.OCT_TRUSTED_PROXIES = []
    scan = ScanFactory()
    client.force_login(clinician)
    response = client.get(reverse("cases:scan_image", args=[scan.pk]), REMOTE_ADDR="198.51.100.4",
                          HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert response.status_code == 200
    entry = LogEntry.objects.filter(action=LogEntry.Action.ACCESS).latest("timestamp")
    assert entry.remote_addr == "198.51.100.4"


@pytest.mark.django_db
def test_the_audit_behind_the_trusted_proxy_records_the_client(client, clinician, settings):
    settings.OCT_TRUSTED_PROXIES = ["10.0.0.5"]
    scan = ScanFactory()
    client.force_login(clinician)
    client.get(reverse("cases:scan_image", args=[scan.pk]), REMOTE_ADDR="10.0.0.5",
               HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    entry = LogEntry.objects.filter(action=LogEntry.Action.ACCESS).latest("timestamp")
    assert entry.remote_addr == "203.0.113.9"
    assert entry.remote_port is None


@pytest.mark.django_db
def test_the_lockout_counts_the_same_address_as_the_audit(client, settings):
    settings.OCT_TRUSTED_PROXIES = ["10.0.0.5"]
    client.post("/accounts/login/", {"username": "nobody", "password": "wrong-password-123"},
                REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["203.0.113.9"]


def test_the_shipped_nginx_sets_the_forwarded_header_instead_of_appending():
    conf = (REPO / "docker" / "nginx.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    assert "$proxy_add_x_forwarded_for" not in conf
