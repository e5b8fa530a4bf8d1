"""The DICOM receiver against dcmtk's storescu, on loopback.

Skips with the reason when storescu is missing, unless ``OCT_REQUIRE_SERVICES=1`` (CI).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from unittest import mock

import pytest
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from cases.models import Patient, Scan, Volume
from intake import deid
from intake.receiver import STATUS_CANNOT_UNDERSTAND, Receiver
from tests.cases.conftest import media_root, stored_files  # noqa: F401 - fixtures
from tests.intake import dicom_files

STORESCU = shutil.which("storescu")


@pytest.fixture
def storescu() -> str:
    if STORESCU is None:
        reason = "dcmtk's storescu is not installed (apt-get install dcmtk)"
        if os.environ.get("OCT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (OCT_REQUIRE_SERVICES=1: services are required here)")
        pytest.skip(reason)
    return STORESCU


@pytest.fixture
def receiver():
    clock = {"now": 0.0}
    rx = Receiver(ae_title="OCTPORTAL", allowed_calling=["SPECTRALIS"], quiet_s=10.0, clock=lambda: clock["now"])
    server = rx.start(bind="127.0.0.1", port=0)
    rx.port = server.server_address[1]
    rx.advance = lambda s: clock.__setitem__("now", clock["now"] + s)
    yield rx
    rx.stop()


@pytest.fixture(autouse=True)
def no_enqueue():
    with mock.patch("intake.services.scan_request_analysis"), \
            mock.patch("intake.services.scans_request_analysis") as request:
        yield request


def send(storescu: str, port: int, *paths, calling: str = "SPECTRALIS", jpeg: bool = False) -> subprocess.CompletedProcess[str]:
    # -xy proposes JPEG baseline (storescu does not transcode JPEG files to another syntax).
    flags = ["-xy"] if jpeg else ["-R"]
    return subprocess.run(
        [storescu, "-v", *flags, "-aet", calling, "-aec", "OCTPORTAL", "127.0.0.1", str(port), *map(str, paths)],
        capture_output=True, text=True, timeout=60,
    )


def test_series_sent_by_storescu_becomes_a_volume_after_the_quiet_period(db, storescu, receiver, oct_data, tmp_path):
    frames = dicom_files.real_bscans(oct_data, count=3)
    series = generate_uid()
    opt = tmp_path / "oct.dcm"
    opt.write_bytes(dicom_files.opt_bytes(frames, series_uid=series, transfer_syntax=JPEGBaseline8Bit))
    slo = tmp_path / "slo.dcm"
    slo.write_bytes(dicom_files.op_bytes(frames[0][:128, :128], series_uid=series))
    done = send(storescu, receiver.port, opt, slo, jpeg=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert receiver.pending_series() == 1
    receiver.advance(5)
    assert receiver.flush().volumes == [] and receiver.pending_series() == 1  # not quiet yet
    receiver.advance(6)
    (volume,) = receiver.flush().volumes
    assert volume.slice_count == 3 and volume.localizer and volume.laterality == "OD"
    assert volume.case.patient.identifier == deid.patient_pseudonym(dicom_files.PATIENT_ID)
    assert Patient.objects.count() == 1


def test_a_calling_ae_title_not_allowed_is_rejected_at_association(db, storescu, receiver, oct_data, tmp_path):
    path = tmp_path / "oct.dcm"
    path.write_bytes(dicom_files.opt_bytes(dicom_files.real_bscans(oct_data, count=1)))
    done = send(storescu, receiver.port, path, calling="INTRUDER")
    assert done.returncode != 0
    assert "reject" in (done.stdout + done.stderr).lower()
    assert receiver.pending_series() == 0


def test_a_broken_instance_gets_a_failure_status_and_nothing_is_stored(db, storescu, receiver, oct_data, tmp_path,
                                                                       media_root):
    frames = dicom_files.real_bscans(oct_data, count=2)
    # Well-formed DICOM declaring JPEG baseline, whose fragments are raw pixels: it parses,
    # and cannot decode.
    broken = dicom_files.opt_bytes(frames, declared_syntax=JPEGBaseline8Bit)
    path = tmp_path / "broken.dcm"
    path.write_bytes(broken)
    done = send(storescu, receiver.port, path, jpeg=True)
    output = (done.stdout + done.stderr).lower()
    assert receiver.pending_series() == 0, output
    assert "error: cannotunderstand" in output, output  # status 0xC000
    assert receiver.flush(force=True).volumes == []
    assert not Volume.objects.exists() and not Scan.objects.exists() and stored_files(media_root) == []


def test_no_allowed_calling_ae_refuses_to_start():
    with pytest.raises(ValueError, match="OCT_DICOM_ALLOWED_AE_TITLES"):
        Receiver(ae_title="OCTPORTAL", allowed_calling=[], quiet_s=1)


def test_status_code_for_broken_is_cannot_understand():
    assert STATUS_CANNOT_UNDERSTAND == 0xC000


# --- a PACS forwarding to the receiver: Orthanc, started by the test on loopback ----------

ORTHANC = shutil.which("Orthanc")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def orthanc(tmp_path):
    if ORTHANC is None:
        reason = "Orthanc is not installed (apt-get install orthanc)"
        if os.environ.get("OCT_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (OCT_REQUIRE_SERVICES=1: services are required here)")
        pytest.skip(reason)
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "test-pacs", "StorageDirectory": str(tmp_path / "orthanc"), "IndexDirectory": str(tmp_path / "orthanc"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "HttpServerEnabled": True, "Plugins": [], "DicomModalities": {},
    }
    state = {"config": config, "path": tmp_path / "orthanc.json", "url": f"http://127.0.0.1:{http_port}"}
    yield state
    proc = state.get("proc")
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=20)


def _start_orthanc(state, *, receiver_port: int) -> None:
    state["config"]["DicomModalities"] = {"octportal": ["OCTPORTAL", "127.0.0.1", receiver_port]}
    state["path"].write_text(json.dumps(state["config"]))
    state["proc"] = subprocess.Popen([ORTHANC, str(state["path"])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(state["url"] + "/system", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail("Orthanc did not start within 30 s")


def _post(url: str, body: bytes, content_type: str = "application/dicom") -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def test_orthanc_forwards_a_series_to_the_receiver(db, orthanc, oct_data):
    clock = {"now": 0.0}
    rx = Receiver(ae_title="OCTPORTAL", allowed_calling=["ORTHANC"], quiet_s=10.0, clock=lambda: clock["now"])
    server = rx.start(bind="127.0.0.1", port=0)
    try:
        _start_orthanc(orthanc, receiver_port=server.server_address[1])
        frames = dicom_files.real_bscans(oct_data, count=2)
        series = generate_uid()
        stored = _post(orthanc["url"] + "/instances", dicom_files.opt_bytes(frames, series_uid=series))
        _post(orthanc["url"] + "/instances", dicom_files.op_bytes(frames[0][:64, :64], series_uid=series))
        _post(orthanc["url"] + "/modalities/octportal/store", json.dumps(stored["ParentSeries"]).encode(),
              "application/json")
        clock["now"] += 11
        (volume,) = rx.flush().volumes
    finally:
        rx.stop()
    assert volume.slice_count == 2 and volume.localizer
