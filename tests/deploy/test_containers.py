"""The container image and the compose file, checked without a Docker daemon: the
Dockerfile passes hadolint, the compose file validates against the compose-spec schema
(vendored in check-jsonschema) and yamllint, and the steps the image runs (model check,
collectstatic, gunicorn, the health-check command) work here."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.deploy.seaweed import unavailable

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "Dockerfile.dockerignore"
COMPOSE = REPO / "docker" / "compose.yaml"
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 160}, document-start: disable, truthy: {check-keys: false}}}"
)


def tool(name: str) -> str:
    """A CLI from requirements-dev.txt: beside this interpreter (the venv) or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed (pip install -r requirements-dev.txt)")
    return found


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=120, check=False, **kw)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def final_stage(text: str) -> str:
    return re.split(r"(?m)^FROM ", text)[-1]


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    result = run(tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_slim_and_runs_as_a_numeric_non_root_user():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"(?m)^FROM (\S+)", text)
    assert len(froms) == 2 and all(f.endswith("-slim") for f in froms), "two slim stages"
    stage = final_stage(text)
    users = re.findall(r"(?m)^USER (\S+)", stage)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0].isdigit(), "numeric: Kubernetes' runAsNonRoot can verify it"
    assert "pip install" not in stage, "the final stage only copies the built environment"
    installs = re.findall(r"apt-get install[^\n]*", text)
    assert all(set(line.split()[4:]) <= {"libpango-1.0-0", "libpangoft2-1.0-0", "fonts-dejavu-core", "\\"}
               for line in installs), f"only WeasyPrint's Pango and fonts come from apt: {installs}"


def test_image_bakes_in_the_model_and_keeps_tests_and_training_out():
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for needed in ("inference", "inference/weights", "octportal", "cases", "static", "templates", "manage.py"):
        assert not any(needed == p or needed.startswith(p.rstrip("/") + "/") for p in patterns), needed
    assert not any(p.endswith(".onnx") for p in patterns)
    for excluded in ("tests", "training", ".git", ".venv", ".env"):
        assert excluded in patterns
    assert "served_model()" in DOCKERFILE.read_text(), "the build fails without the model"


def test_the_images_build_step_checks_the_model_and_collects_static(tmp_path):
    """Run the final stage's RUN command here (as the image would, production settings)."""
    stage = final_stage(DOCKERFILE.read_text())
    command = re.search(r"(?ms)^RUN (DJANGO_SECRET_KEY=build-only.*?)(?=^[A-Z]+ )", stage).group(1)
    command = command.replace("\\\n", " ").split("&& mkdir -p /data/media")[0]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "octportal.settings.production",
           "STATIC_ROOT": str(tmp_path / "static"), "MEDIA_ROOT": str(tmp_path / "media"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"model oct-lite0 \S+ \d+ bytes", result.stdout)
    assert (tmp_path / "static" / "admin").is_dir(), "static files collected"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_gunicorn_from_requirements_serves_the_health_endpoints(tmp_path):
    """The image's CMD (gunicorn, production settings) on loopback; the compose health
    check command agrees with what the endpoints say."""
    port = _free_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "octportal.settings.production", "DJANGO_SECRET_KEY": "t" * 50,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "MEDIA_ROOT": str(tmp_path / "media"),
           "CELERY_BROKER_URL": "", "OCT_HEALTH_PORT": str(port)}
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [tool("gunicorn"), "octportal.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--timeout", "60"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                    assert resp.status == 200 and json.loads(resp.read()) == {"status": "ok"}
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        # Not migrated: the database answers but holds no model version, so not ready.
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert not_ready.value.code == 503
        body = json.loads(not_ready.value.read())
        assert body["status"] == "unavailable" and body["checks"]["database"]["ok"] is True
        live = run(sys.executable, "-m", "octportal.health", env=env)
        ready = run(sys.executable, "-m", "octportal.health", "--ready", env=env)
        assert (live.returncode, ready.returncode) == (0, 1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# --- compose ------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec():
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_passes_yamllint():
    result = run(tool("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_health_checks_use_the_health_endpoints():
    services = compose()["services"]
    assert services["web"]["healthcheck"]["test"] == ["CMD", "python", "-m", "octportal.health", "--ready"]
    assert "inspect ping" in services["worker"]["healthcheck"]["test"][1]
    assert "register_model" in services["web"]["command"], "/readyz needs the active model version"


def test_seaweedfs_is_optional_and_not_published_on_the_host():
    services = compose()["services"]
    s3 = services["seaweedfs"]
    assert s3["profiles"] == ["s3"]
    assert "ports" not in s3, "reachable on the compose network only"
    assert re.fullmatch(r"chrislusf/seaweedfs:\d+\.\d+", s3["image"]), "pinned image"
    assert "healthcheck" in s3
    for name, service in services.items():
        if name != "seaweedfs":
            assert "profiles" not in service, f"{name} starts without a profile"


def test_every_image_is_pinned():
    for name, service in compose()["services"].items():
        image = service.get("image", "")
        if image.startswith("octportal:"):
            continue  # built from this repository
        assert re.search(r":\d", image), f"{name}: {image} has no version tag"


def test_compose_passes_the_recovery_and_storage_settings_through():
    env = compose()["x-app"]["environment"]
    for key in ("OCT_S3_BUCKET", "OCT_S3_ENDPOINT_URL", "OCT_S3_ACCESS_KEY_ID", "OCT_S3_SECRET_ACCESS_KEY",
                "OCT_INFERENCE_STALE_AFTER_S", "OCT_SWEEP_INTERVAL_S"):
        assert key in env
    assert env["OCT_S3_SECRET_ACCESS_KEY"] == "${OCT_S3_SECRET_ACCESS_KEY:-}", "no secret in the file"
