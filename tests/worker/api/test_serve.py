"""`jobrunner api` with api.tls_certfile/tls_keyfile serves HTTPS (a certificate made here)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jobrunner.worker.broker.embedded import free_port
from tests.conftest import ROOT
from tests.support.cli import run

pytestmark = pytest.mark.integration


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert, pem = folder / "api.crt", folder / "api.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, pem


def test_serves_https_with_a_certificate(stack_env: dict[str, str], tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    port = free_port()
    env = {
        "JOBRUNNER_API__PORT": str(port),
        "JOBRUNNER_API__TLS_CERTFILE": str(cert),
        "JOBRUNNER_API__TLS_KEYFILE": str(key),
    }
    log = tmp_path / "api.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "jobrunner", "api"],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the API did not answer over HTTPS"
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/pipelines", context=trusted)
            except urllib.error.HTTPError as refused:  # TLS done; no token: refused
                assert refused.code == 401
                break
            except OSError:
                time.sleep(0.1)
        with pytest.raises(OSError):  # plain HTTP is not served
            urllib.request.urlopen(f"http://127.0.0.1:{port}/pipelines", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=20)
    half = run("api", JOBRUNNER_API__TLS_CERTFILE=str(cert), JOBRUNNER_API__TLS_KEYFILE="")
    assert half.returncode == 1
    assert "api.tls_certfile and api.tls_keyfile go together" in half.stderr
