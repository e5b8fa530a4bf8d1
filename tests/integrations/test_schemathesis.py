"""schemathesis against the committed schema (docs/openapi.yaml) on the live test server
(loopback), with an API token, on every operation: no 5xx, every status code documented,
responses as the schema says. Bounded: a few examples per operation, no shrinking, a time
limit.

On SQLite the cases run in this process (schemathesis' pytest integration, one test per
operation) and the tasks run eagerly, in the live server's thread.

On PostgreSQL the schemathesis CLI runs the same checks from its own process against the
live server, beside a real ``celery worker`` consuming from Redis: uploads are published,
not run eagerly, and about half of the generated uploads carry a real B-scan into an
examination that exists (schemathesis_hooks.py), so the API is fuzzed while the worker
writes readings. The test then asserts that the worker stayed up through the run and read
every scan the run uploaded. Needs what tests/integration/workers.py's fixtures need
(Redis at ``CELERY_TEST_BROKER_URL``, the shipped model, the real B-scans).
"""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cases.models import Scan
from cases.roles import Role
from inference.models import Prediction
from integrations import services as token_services
from tests.conftest import REPO_ROOT, make_user
from tests.factories import CaseFactory, ScanFactory
from tests.integration.workers import NEEDS_POSTGRES, ON_POSTGRES, statuses, wait_for

SCHEMA = REPO_ROOT / "docs" / "openapi.yaml"
HOOKS = REPO_ROOT / "tests" / "integrations" / "schemathesis_hooks.py"
schema = schemathesis.openapi.from_path(SCHEMA)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 6
# The CLI run beside the worker: about 40 s on the 2-core development machine.
RUN_LIMIT_S = 300


def _token_for_fuzzing() -> str:
    user = make_user("fuzz", Role.CLINICIAN, Role.GRADER_T1, Role.GRADER_T3)
    _, secret = token_services.token_create(user=user, name="schemathesis", scope="write", days=1)
    return secret


@pytest.fixture
def token_headers(live_url, settings, tmp_path) -> dict[str, str]:
    settings.MEDIA_ROOT = str(tmp_path)
    ScanFactory()  # one record of each kind, so that some ids exist
    return {"Authorization": f"Bearer {_token_for_fuzzing()}"}


@pytest.mark.skipif(ON_POSTGRES, reason="on PostgreSQL the run beside a real worker below covers every operation")
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_schema(case, live_url, token_headers):
    case.call_and_validate(base_url=live_url, headers=token_headers, checks=CHECKS, timeout=30)


@pytest.mark.integration
@pytest.mark.skipif(not ON_POSTGRES, reason=NEEDS_POSTGRES)
def test_the_api_keeps_to_its_schema_beside_a_real_worker_that_reads_the_fuzzed_uploads(
    live_url, reading_worker, images, tmp_path
):
    ScanFactory()
    case = CaseFactory()
    bscans = tmp_path / "bscans"
    bscans.mkdir()
    for i, data in enumerate(images[:MAX_EXAMPLES]):
        (bscans / f"bscan-{i}.jpeg").write_bytes(data)
    junit = tmp_path / "schemathesis.xml"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "OCT_FUZZ_CASE_ID": str(case.pk),
           "OCT_FUZZ_BSCANS": str(bscans)}
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(SCHEMA), "--url", live_url,
        "--header", f"Authorization: Bearer {_token_for_fuzzing()}",
        "--checks", ",".join(check.__name__ for check in CHECKS),
        "--phases", "examples,fuzzing", "--max-examples", str(MAX_EXAMPLES), "--no-shrink",
        "--suppress-health-check", "all", "--workers", "1", "--request-timeout", "30",
        "--generation-database", "none", "--report", "junit", "--report-junit-path", str(junit), "--no-color",
    ]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found problems (exit {run.returncode}):\n{output[-8000:]}"

    # Every operation of the schema was run, and none failed or errored.
    tested = {c.get("name"): c for c in ET.parse(junit).iter("testcase")}
    operations = {result.ok().label for result in schema.get_all_operations()}
    assert set(tested) == operations, f"not run: {operations - set(tested)}\n{output[-3000:]}"
    for name, result in tested.items():
        assert not [child.tag for child in result], f"{name}: {ET.tostring(result, encoding='unicode')[:2000]}"

    # The worker was up throughout, and read every scan the run uploaded.
    assert reading_worker.alive() and reading_worker.starts == 1, f"the worker died (log {reading_worker.log})"
    uploaded = list(Scan.objects.filter(case=case).values_list("id", flat=True))
    assert uploaded, f"no generated upload was accepted:\n{output[-3000:]}"
    wait_for(lambda: statuses(uploaded).get(Scan.Status.ANALYSED, 0) == len(uploaded), timeout=120,
             what=f"the {len(uploaded)} uploaded scans read (now {statuses(uploaded)}; log {reading_worker.log})")
    readings = Prediction.objects.filter(scan_id__in=uploaded)
    assert sorted(readings.values_list("scan_id", flat=True)) == sorted(uploaded)
    assert all(p.gate_passed and p.predicted for p in readings)
    assert reading_worker.succeeded("inference.tasks.predict_") >= 1, "the worker process read them"
    assert reading_worker.alive() and "WorkerLostError" not in reading_worker.text(), "its pool process died"
    seed = next((line.strip() for line in output.splitlines() if line.startswith("Seed:")), "")
    print(f"{len(tested)} operations fuzzed; {len(uploaded)} uploaded scans read by the worker; {seed}")
