"""Database session settings the app relies on (octportal.settings.base)."""
from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL session setting")
def test_postgresql_sessions_run_without_jit_compilation():
    # JIT compiled a cheap worklist query for 780 ms at 1M scans (docs/deployment.md).
    with connection.cursor() as cur:
        cur.execute("SHOW jit")
        assert cur.fetchone()[0] == "off"
