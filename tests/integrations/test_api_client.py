"""docs/api.md's Python client, run as written against the live test server with a token."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from cases.models import Patient, Scan
from cases.roles import Role
from inference import health as inference_health
from inference import services as inference_services
from integrations import services as token_services
from tests.conftest import REPO_ROOT, make_user
from tests.factories import bscan_bytes


def client_code() -> str:
    text = (REPO_ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if "upload_folder.py" in b)


@pytest.fixture
def shipped_model(transactional_db):
    path, name, version = inference_health.served_model()
    if not path.is_file():
        pytest.skip(f"the shipped model {path} is not in the checkout")
    inference_services.model_version_register(
        name=name, version=version, sha256=inference_health.file_sha256(path), file_name=path.name, activate=True
    )


def test_the_documented_client_uploads_a_folder_and_prints_each_reading(live_url, shipped_model, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    user = make_user("script-owner", Role.CLINICIAN)
    _, secret = token_services.token_create(user=user, name="upload script", scope="write", days=1)
    folder = tmp_path / "bscans"
    folder.mkdir()
    (folder / "od-01.png").write_bytes(bscan_bytes(seed=11, width=512, height=496))
    (folder / "od-02.png").write_bytes(bscan_bytes(seed=12, width=512, height=496))
    (folder / "notes.jpg").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    (folder / "README.txt").write_text("not sent")
    script = tmp_path / "upload_folder.py"
    script.write_text(client_code())
    env = {**os.environ, "OCT_URL": live_url, "OCT_TOKEN": secret}
    result = subprocess.run([sys.executable, str(script), str(folder), "MRN-API-7", "OD"],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("notes.jpg: rejected:") for line in lines), lines
    for name in ("od-01.png", "od-02.png"):
        [line] = [x for x in lines if x.startswith(name)]
        assert "model " in line, line
    assert Patient.objects.filter(identifier="MRN-API-7").count() == 1
    assert Scan.objects.filter(case__patient__identifier="MRN-API-7").count() == 2
