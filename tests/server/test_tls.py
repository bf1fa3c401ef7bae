"""HTTPS with `--tls-cert-file/--tls-key-file`: the real CLI, a self-signed certificate."""

from __future__ import annotations

import http.client
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from llamaswap_proc import chat_body, fake_model, llamaswap

CONFIG = "models:\n" + fake_model("m1")

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    tmp_path.mkdir(exist_ok=True)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_serves_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trusting = ssl.create_default_context(cafile=str(cert))  # verifies name and chain
    args = ("--tls-cert-file", str(cert), "--tls-key-file", str(key))
    with llamaswap(tmp_path, CONFIG, extra_args=args, ssl_context=trusting) as server:
        assert server.base.startswith("https://")
        health = server.call("GET", "/health")
        assert (health.status, health.text) == (200, "OK")
        reply = server.call("POST", "/v1/chat/completions", chat_body("m1"))
        assert reply.status == 200
        assert reply.json()["model"] == "m1"
        # It really is TLS: a plain-HTTP request on the same port gets no HTTP answer,
        conn = http.client.HTTPConnection(f"127.0.0.1:{server.port}", timeout=5)
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("GET", "/health")
            conn.getresponse()
        conn.close()
        # and a client that does not trust the certificate refuses it.
        strict = ssl.create_default_context()
        https = http.client.HTTPSConnection(f"127.0.0.1:{server.port}", timeout=5, context=strict)
        with pytest.raises(ssl.SSLCertVerificationError):
            https.request("GET", "/health")
        https.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaswap", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cert_without_key_is_a_usage_error(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    for flags in (("--tls-cert-file", str(cert)), ("-tls-key-file", str(key))):
        result = run_cli("--config", str(config), "--listen", "127.0.0.1:1", *flags)
        assert result.returncode == 2, result.stderr
        assert "--tls-cert-file and --tls-key-file must be given together" in result.stderr
        assert "Traceback" not in result.stderr + result.stdout


def test_missing_or_unusable_files_are_clear_errors(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    missing = run_cli(
        "--config", str(config), "--tls-cert-file", str(tmp_path / "nope.pem"), "--tls-key-file",
        str(key),
    )  # fmt: skip
    assert missing.returncode == 2
    assert "nope.pem" in missing.stderr and "does not exist" in missing.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    _, other_key = self_signed(tmp_path / "other")
    for cert_file, key_file in ((garbage, key), (cert, other_key)):
        bad = run_cli(
            "--config", str(config), "--tls-cert-file", str(cert_file), "--tls-key-file",
            str(key_file),
        )  # fmt: skip
        assert bad.returncode == 1, bad.stderr
        assert bad.stderr.startswith(f"llamaswap: cannot use --tls-cert-file {cert_file} ")
        assert "Traceback" not in bad.stderr + bad.stdout
        assert "listening" not in bad.stdout  # refused before starting anything
