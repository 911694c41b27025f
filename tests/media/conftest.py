"""Media stores for the tests: the local folder, and S3 as moto's server on loopback
(a local S3-compatible server standing in for AWS S3, MinIO or R2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from openfal.config import Settings
from tests.support import free_port


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t").create_bucket(Bucket="media")
    yield url
    server.stop()


@pytest.fixture
def s3_settings(s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return Settings(
        data_dir=tmp_path, media_backend="s3", s3_bucket="media", s3_endpoint_url=s3_server, s3_region="us-east-1", s3_prefix="t/"
    )
