"""Scan images and heatmaps in an S3 bucket: the settings select it from the
environment, and a real upload through the app lands in a real S3 server (SeaweedFS on
loopback), gets its analysis, and stays private."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from cases.models import Scan
from inference.models import Prediction
from tests.deploy.seaweed import S3Server, seaweedfs_s3
from tests.factories import CaseFactory
from tests.inference.support import real_model_or_skip

REPO = Path(__file__).resolve().parents[2]
BUCKET = "octportal-scans"
PREFIX = "clinic-a"


def settings_storages(**env: str) -> dict:
    """STORAGES as octportal.settings.base builds it from these environment variables
    (a fresh interpreter: settings are read once per process)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OCT_S3_", "AWS_"))}
    code = ("import django, json; django.setup(); from django.conf import settings; "
            "print(json.dumps(settings.STORAGES))")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
        env={**clean, "DJANGO_SETTINGS_MODULE": "octportal.settings.base", **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_local_disk_is_the_default_storage():
    assert settings_storages()["default"] == {"BACKEND": "django.core.files.storage.FileSystemStorage"}


def test_s3_is_selected_by_the_bucket_variable_and_kept_private():
    storages = settings_storages(OCT_S3_BUCKET="b", OCT_S3_ENDPOINT_URL="http://127.0.0.1:1", OCT_S3_REGION="eu-1")
    default = storages["default"]
    assert default["BACKEND"] == "storages.backends.s3.S3Storage"
    options = default["OPTIONS"]
    assert options["bucket_name"] == "b" and options["endpoint_url"] == "http://127.0.0.1:1"
    assert options["region_name"] == "eu-1"
    assert options["default_acl"] == "private" and options["querystring_auth"] is True
    assert options["file_overwrite"] is False
    assert options["access_key"] is None and options["secret_key"] is None, "boto3's own chain when unset"
    keyed = settings_storages(OCT_S3_BUCKET="b", OCT_S3_ACCESS_KEY_ID="ak", OCT_S3_SECRET_ACCESS_KEY="sk")
    assert (keyed["default"]["OPTIONS"]["access_key"], keyed["default"]["OPTIONS"]["secret_key"]) == ("ak", "sk")
    assert storages["staticfiles"]["BACKEND"] == "django.contrib.staticfiles.storage.StaticFilesStorage"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    with seaweedfs_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def s3_storage(s3_server, settings, monkeypatch) -> S3Server:
    """Point Django's default storage at the bucket, configured exactly as the settings
    module configures it from the environment."""
    env = {"OCT_S3_BUCKET": BUCKET, "OCT_S3_ENDPOINT_URL": s3_server.endpoint_url,
           "OCT_S3_REGION": s3_server.region, "OCT_S3_PREFIX": PREFIX, "OCT_S3_ADDRESSING_STYLE": "path"}
    storages = settings_storages(**env)
    # The credentials through boto3's standard variables (the settings leave them unset).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    settings.STORAGES = storages  # resets default_storage (setting_changed)
    return s3_server


def _object_keys(server: S3Server) -> set[str]:
    listing = server.client().list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/")
    return {o["Key"] for o in listing.get("Contents", [])}


@pytest.mark.integration
@pytest.mark.parametrize("keep_uploaded", [False, True], ids=["default", "uploaded-bytes-kept"])
def test_upload_lands_in_the_bucket_and_is_analysed(
    s3_storage, oct_data, client, clinician, django_capture_on_commit_callbacks, settings, keep_uploaded
):
    real_model_or_skip()
    settings.OCT_KEEP_UPLOADED_FILES = keep_uploaded
    path = next(iter(sorted((oct_data / "kermany").rglob("*.jp*g"))), None)
    if path is None:
        pytest.skip(f"no real B-scan under {oct_data / 'kermany'}")
    data = path.read_bytes()
    case = CaseFactory()
    client.force_login(clinician)
    with django_capture_on_commit_callbacks(execute=True):  # the eager analysis runs on commit
        response = client.post(
            reverse("cases:scan_upload", args=[case.pk]),
            {"files": [SimpleUploadedFile("real-bscan.jpeg", data, content_type="image/jpeg")]},
        )
    assert response.status_code == 200
    scan = Scan.objects.get(case=case)
    assert scan.status == Scan.Status.ANALYSED, scan.status_detail
    prediction = Prediction.objects.get(scan=scan)
    assert prediction.gate_passed and prediction.predicted
    assert prediction.heatmap

    keys = _object_keys(s3_storage)
    stored_names = [scan.image.name] + ([scan.original.name] if keep_uploaded else [])
    for name in stored_names:
        assert f"{PREFIX}/{name}" in keys, f"{name} not in the bucket: {sorted(keys)}"
    assert bool(scan.original) == keep_uploaded
    if keep_uploaded:
        original = s3_storage.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/{scan.original.name}")["Body"].read()
        assert original == data, "the uploaded bytes are kept byte for byte"
    assert not (Path(django_settings.MEDIA_ROOT) / scan.image.name).exists(), "nothing on local disk"

    # The app serves the image through its authenticated view, read back from the bucket.
    grey = s3_storage.client().get_object(Bucket=BUCKET, Key=f"{PREFIX}/{scan.image.name}")["Body"].read()
    image = client.get(reverse("cases:scan_image", args=[scan.pk]))
    assert image.status_code == 200 and b"".join(image.streaming_content) == grey
    # The heatmap overlay is drawn from the reading's grid when first asked for, then kept in the bucket.
    heatmap_key = f"{PREFIX}/{prediction.heatmap.name}"
    assert heatmap_key not in keys
    overlay = client.get(reverse("inference:heatmap", args=[scan.pk]))
    assert overlay.status_code == 200 and overlay.content.startswith(b"\x89PNG")
    assert s3_storage.client().head_object(Bucket=BUCKET, Key=heatmap_key)["ContentLength"] > 0
    assert client.get(reverse("inference:heatmap", args=[scan.pk])).content == overlay.content
    stored_names.append(prediction.heatmap.name)

    # Private: the bucket refuses anonymous reads, and no page hands out a bucket URL.
    for name in stored_names:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{s3_storage.endpoint_url}/{BUCKET}/{PREFIX}/{name}", timeout=10)
        assert refused.value.code == 403
    page = client.get(reverse("cases:scan_detail", args=[scan.pk])).content.decode()
    assert s3_storage.endpoint_url not in page and BUCKET not in page


def test_the_image_view_needs_a_login_with_s3_too(s3_storage, client, db):
    from tests.factories import ScanFactory

    scan = ScanFactory()
    assert f"{PREFIX}/{scan.image.name}" in _object_keys(s3_storage)
    response = client.get(reverse("cases:scan_image", args=[scan.pk]))
    assert response.status_code in (302, 403)
    assert s3_storage.endpoint_url not in response.get("Location", "")


def test_signed_urls_only(s3_storage, db):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    name = default_storage.save("probe/x.txt", ContentFile(b"x"))
    second = default_storage.save("probe/x.txt", ContentFile(b"y"))
    assert second != name, "an existing object is never overwritten"
    url = default_storage.url(name)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url


def test_readyz_checks_the_bucket(s3_storage, client, db, settings):
    from tests.deploy.test_health import _register_shipped_model

    _register_shipped_model()
    assert client.get("/readyz").json()["checks"]["storage"]["ok"] is True
    settings.STORAGES = {**settings.STORAGES, "default": {**settings.STORAGES["default"], "OPTIONS": {
        **settings.STORAGES["default"]["OPTIONS"], "bucket_name": "no-such-bucket-here"}}}
    os.environ["AWS_SECRET_ACCESS_KEY"] = "wrong"  # restored by the s3_storage fixture's monkeypatch
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"]["status"] == "unavailable"
    assert "no-such-bucket" not in response.content.decode()


def test_a_missing_object_reads_as_a_missing_file(s3_storage, clinician, client, db):
    """The image view and the analysis treat FileNotFoundError as "file missing"; the S3
    backend must raise the same, not a botocore error."""
    from tests.factories import ScanFactory

    scan = ScanFactory()
    s3_storage.client().delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{scan.image.name}")
    with pytest.raises(FileNotFoundError):
        scan.image.open("rb")
    client.force_login(clinician)
    assert client.get(reverse("cases:scan_image", args=[scan.pk])).status_code == 404
