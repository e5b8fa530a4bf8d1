"""No patient identifier in request logs (real requests through a real server, real log
output) or in task messages."""
from __future__ import annotations

import io
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from celery.app.task import Task
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.servers.basehttp import WSGIRequestHandler
from django.db import connections
from django.test import Client
from django.test.testcases import LiveServerThread, _StaticFilesHandler
from django.test.utils import override_settings
from rest_framework.authtoken.models import Token

from octportal.logging import redact_query_strings
from tests.factories import CaseFactory, PatientFactory, bscan_bytes

REPO = Path(__file__).resolve().parents[2]
IDENTIFIER = "KER-103044"


class LoggingServerThread(LiveServerThread):
    """Django's live server, but with the development server's request logging left on."""

    def _create_server(self, connections_override=None):
        return self.server_class((self.host, self.port), WSGIRequestHandler, allow_reuse_address=False,
                                 connections_override=connections_override)


@pytest.fixture
def server(transactional_db):
    from django.contrib.auth.models import Group

    from cases.roles import Role

    # Transactional tests flush the database, role groups included.
    for name in Role.values:
        Group.objects.get_or_create(name=name)
    shared = {c.alias: c for c in connections.all() if c.vendor == "sqlite" and c.is_in_memory_db()}
    for conn in shared.values():
        conn.inc_thread_sharing()
    with override_settings(MEDIA_URL="http://media.invalid/"):
        thread = LoggingServerThread("localhost", _StaticFilesHandler, connections_override=shared)
        thread.daemon = True
        thread.start()
        thread.is_ready.wait()
        if thread.error:
            raise thread.error
        yield f"http://localhost:{thread.port}"
        thread.terminate()
    for conn in shared.values():
        conn.dec_thread_sharing()


@pytest.fixture
def log_output():
    """What the configured console handler writes (the handler and filters of LOGGING)."""
    handlers = {h for name in ("", "django", "django.server") for h in logging.getLogger(name).handlers
                if h.get_name() == "console"}
    assert handlers, "LOGGING's console handler is not attached"
    buf = io.StringIO()
    old = [(h, h.setStream(buf)) for h in handlers]
    yield buf
    for h, stream in old:
        h.setStream(stream)


def get(url: str, **headers: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_patient_search_leaves_no_identifier_in_the_server_log(server, log_output, user_factory):
    from cases.roles import Role

    clinician = user_factory("clinician", Role.CLINICIAN)
    PatientFactory(identifier=IDENTIFIER)
    browser = Client()
    browser.force_login(clinician)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    token = Token.objects.create(user=clinician).key

    assert get(f"{server}/patients/?q={IDENTIFIER}", Cookie=cookie) == 200
    assert get(f"{server}/api/patients/?q={IDENTIFIER}", Authorization=f"Token {token}") == 200
    assert get(f"{server}/api/patients/?q={IDENTIFIER}&page=9", Authorization=f"Token {token}") == 404
    assert get(f"{server}/no-such-page/?q={IDENTIFIER}") == 404

    output = log_output.getvalue()
    assert re.search(r'"GET /patients/\?\[redacted\] HTTP/1\.1" 200', output), output
    assert '"GET /api/patients/?[redacted] HTTP/1.1" 404' in output
    assert "Not Found: /no-such-page/" in output  # django.request's warning, through the same handler
    assert IDENTIFIER not in output
    assert "q=" not in output


def test_redaction_keeps_the_path_and_drops_every_query_string():
    assert redact_query_strings('"GET /a/b/?q=KER-1&page=2 HTTP/1.1" 200 5') == '"GET /a/b/?[redacted] HTTP/1.1" 200 5'
    assert redact_query_strings("Forbidden: /api/x/") == "Forbidden: /api/x/"
    assert redact_query_strings("see http://h/p?q=1 and /r?x=2") == "see http://h/p?[redacted] and /r?[redacted]"


def test_the_gunicorn_access_log_leaves_out_the_query_string_and_referrer():
    namespace: dict = {}
    exec((REPO / "docker" / "gunicorn.conf.py").read_text(), namespace)
    fmt = namespace["access_log_format"]
    assert "%(U)s" in fmt
    for field in ("%(r)s", "%(q)s", "%(f)s"):
        assert field not in fmt


def test_the_nginx_access_log_leaves_out_the_query_string_and_referrer():
    conf = (REPO / "docker" / "nginx.conf").read_text()
    log_format = conf.split("log_format", 1)[1].split(";", 1)[0]
    assert "$uri" in log_format
    for variable in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$http_referer"):
        assert variable not in log_format
    assert "access_log /var/log/nginx/access.log octportal;" in conf


@pytest.mark.django_db
def test_task_messages_carry_scan_ids_only(api_client, clinician, monkeypatch, django_capture_on_commit_callbacks):
    sent: list[tuple] = []
    original = Task.apply_async

    def recording(self, args=None, kwargs=None, **options):
        sent.append((self.name, args, kwargs))
        return original(self, args=args, kwargs=kwargs, **options)

    monkeypatch.setattr(Task, "apply_async", recording)
    case = CaseFactory(patient=PatientFactory(identifier=IDENTIFIER))
    api_client.force_authenticate(clinician)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            f"/api/cases/{case.pk}/scans/",
            {"files": [SimpleUploadedFile("SMITH_JOHN.png", bscan_bytes(), content_type="image/png")]},
            format="multipart",
        )
    assert response.status_code == 201
    assert sent, "no task was sent"
    for name, args, kwargs in sent:
        flat = list(args or ()) + list((kwargs or {}).values())
        assert all(isinstance(a, int) or (isinstance(a, list) and all(isinstance(i, int) for i in a)) for a in flat), (
            name, args, kwargs)
        assert IDENTIFIER not in repr((args, kwargs)) and "SMITH" not in repr((args, kwargs))
