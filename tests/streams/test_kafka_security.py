"""Kafka TLS/SASL settings without a broker: checking, naming the variable or the flag, and the
options each client library gets. The broker side is tests/integration/test_security.py."""

from __future__ import annotations

import argparse
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from streams.cli import build_parser
from streams.kafka.security import (
    KafkaSecurity,
    SettingError,
    add_kafka_security_options,
    resolve,
    security_from_args,
)
from streams.kafka.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

SASL = {"DMTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DMTWIN_KAFKA_SASL_USERNAME": "alice",
        "DMTWIN_KAFKA_SASL_PASSWORD": "s3cret"}


def test_plaintext_by_default_gives_no_options():
    security = resolve({})
    assert security.protocol == "PLAINTEXT" and security.client() == {} and security.faust() == {}


def test_sasl_ssl_maps_to_aiokafka_kafka_python_and_faust():
    security = resolve(SASL)
    options = security.client()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512", "SCRAM-SHA-512 unless told otherwise"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("alice", "s3cret")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    import faust

    credentials = security.faust()["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.ssl_context is context and credentials.password == "s3cret"
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    assert credentials_to_aiokafka_auth(credentials) == options, "Faust hands its aiokafka clients the same"
    assert "s3cret" not in repr(security) and "s3cret" not in security.describe()


def test_ssl_alone_and_sasl_plaintext():
    ssl_only = resolve({"DMTWIN_KAFKA_SECURITY_PROTOCOL": "ssl"})
    assert ssl_only.client().keys() == {"security_protocol", "ssl_context"}
    import faust

    assert isinstance(ssl_only.faust()["broker_credentials"], faust.SSLCredentials)
    plain = resolve({**SASL, "DMTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                     "DMTWIN_KAFKA_SASL_MECHANISM": "scram-sha-256"})
    assert "ssl_context" not in plain.client() and plain.client()["sasl_mechanism"] == "SCRAM-SHA-256"
    assert plain.faust()["broker_credentials"].protocol.value == "SASL_PLAINTEXT"


def test_the_password_can_come_from_a_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    env = {**SASL, "DMTWIN_KAFKA_SASL_PASSWORD_FILE": str(secret)}
    del env["DMTWIN_KAFKA_SASL_PASSWORD"]
    assert resolve(env).password == "from-file"
    with pytest.raises(SettingError, match="give the password one way"):
        resolve({**env, "DMTWIN_KAFKA_SASL_PASSWORD": "too"})


@pytest.mark.parametrize("env, message", [
    ({"DMTWIN_KAFKA_SECURITY_PROTOCOL": "TLS"},
     "DMTWIN_KAFKA_SECURITY_PROTOCOL='TLS': expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ({**SASL, "DMTWIN_KAFKA_SASL_MECHANISM": "MD5"},
     "DMTWIN_KAFKA_SASL_MECHANISM='MD5': expected one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN"),
    ({"DMTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DMTWIN_KAFKA_SASL_PASSWORD": "x"},
     "DMTWIN_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs a user name: --kafka-user or DMTWIN_KAFKA_SASL_USERNAME"),
    ({"DMTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DMTWIN_KAFKA_SASL_USERNAME": "alice"},
     "DMTWIN_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs a password"),
    ({"DMTWIN_KAFKA_SASL_USERNAME": "alice"},
     "DMTWIN_KAFKA_SASL_USERNAME is set but DMTWIN_KAFKA_SECURITY_PROTOCOL is not set (PLAINTEXT): SASL needs"),
    ({"DMTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "DMTWIN_KAFKA_SASL_USERNAME": "a",
      "DMTWIN_KAFKA_SASL_PASSWORD": "b", "DMTWIN_KAFKA_SSL_CAFILE": "/ca.pem"},
     "DMTWIN_KAFKA_SSL_CAFILE is set but DMTWIN_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT: TLS needs SSL or SASL_SSL"),
    ({"DMTWIN_KAFKA_SECURITY_PROTOCOL": "SSL", "DMTWIN_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "DMTWIN_KAFKA_SSL_CAFILE='/nonexistent/ca.pem': not a readable PEM file of CA certificates"),
    ({"DMTWIN_KAFKA_SECURITY_PROTOCOL": "SSL", "DMTWIN_KAFKA_SSL_KEYFILE": "/k.pem"},
     "DMTWIN_KAFKA_SSL_KEYFILE is set but DMTWIN_KAFKA_SSL_CERTFILE"),
    ({**SASL, "DMTWIN_KAFKA_SASL_PASSWORD": "", "DMTWIN_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"},
     "DMTWIN_KAFKA_SASL_PASSWORD_FILE='/nonexistent/pw': cannot read the password: No such file or directory"),
])
def test_a_bad_value_is_one_error_naming_the_variable(env, message):
    with pytest.raises(SettingError) as raised:
        resolve(env)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_garbage_ca_file_names_it(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    with pytest.raises(SettingError, match="DMTWIN_KAFKA_SSL_CAFILE=.*ca.pem'?: not a readable PEM"):
        resolve({"DMTWIN_KAFKA_SECURITY_PROTOCOL": "SSL", "DMTWIN_KAFKA_SSL_CAFILE": str(ca)})


def test_flags_win_over_the_environment_and_errors_name_the_flag():
    parser = argparse.ArgumentParser()
    add_kafka_security_options(parser)
    args = parser.parse_args(["--kafka-security", "SASL_SSL", "--kafka-user", "bob"])
    security = security_from_args(args, {**SASL, "DMTWIN_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"})
    assert (security.protocol, security.username) == ("SASL_SSL", "bob")
    with pytest.raises(SettingError, match=r"^--kafka-security='tls': expected one of"):
        security_from_args(parser.parse_args(["--kafka-security", "tls"]), {})
    with pytest.raises(SettingError, match=r"^--kafka-sasl-mechanism='X': expected"):
        security_from_args(parser.parse_args(["--kafka-sasl-mechanism", "X"]), SASL)


COMMANDS = [["simulate", "s.toml"], ["worker"], ["log", "export", "f"], ["log", "import", "f", "--to", "kafka://x:1"],
            ["audit", "verify", "kafka://x:1"], ["audit", "explain", "kafka://x:1", "--vm", "v", "--at", "0"],
            ["audit", "report", "kafka://x:1", "-o", "r.html"], ["whatif", "kafka://x:1"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_command_that_talks_to_kafka_has_the_same_flags(command):
    args = build_parser().parse_args([*command, "--kafka-security", "SSL", "--kafka-ca", "ca.pem",
                                      "--kafka-user", "u", "--kafka-password-file", "pw",
                                      "--kafka-sasl-mechanism", "PLAIN", "--kafka-cert", "c", "--kafka-key", "k"])
    assert (args.kafka_protocol, args.kafka_cafile, args.kafka_username) == ("SSL", "ca.pem", "u")


def test_ingest_and_agent_have_them_too():
    from streams.telemetry.ingest import build_parser as ingest_parser

    args = ingest_parser().parse_args(["meminfo", "f", "--to", "kafka://x:1", "--kafka-security", "SASL_SSL"])
    assert args.kafka_protocol == "SASL_SSL"
    agent = subprocess.run([sys.executable, "-m", "streams.cli", "agent", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert "--kafka-password-file" in agent.stdout


def test_the_worker_settings_carry_the_security():
    settings = Settings(security=resolve(SASL))
    assert settings.kafka_client()["sasl_plain_username"] == "alice"
    assert Settings(security=KafkaSecurity()).kafka_client() == {}


def test_a_bad_setting_stops_a_command_with_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DMTWIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "DMTWIN_KAFKA_SASL_USERNAME": "u"}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "log", "export", str(tmp_path / "x.jsonl"),
                           "--from", "kafka://localhost:1"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "DMTWIN_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs a password" in done.stderr


def test_refusals_from_either_library_become_one_line():
    security = resolve(SASL)
    from aiokafka.errors import SaslAuthenticationFailed

    refused = security.refused("kafka1:9093", SaslAuthenticationFailed("invalid credentials with SCRAM-SHA-512"))
    assert refused is not None and str(refused).startswith("Kafka at kafka1:9093 refused the connection "
                                                           "(SASL_SSL, SCRAM-SHA-512 as alice): SASL login failed")
    assert security.refused("kafka1:9093", ConnectionRefusedError(111, "refused")) is None


def _client_pair(folder: Path, encrypt: bool = False) -> tuple[Path, Path]:
    """A self-signed client certificate and its key, PEM."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dmtwin client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "client.pem", folder / "client.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = (serialization.BestAvailableEncryption(b"pass") if encrypt else serialization.NoEncryption())
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return cert_file, key_file


def test_a_client_certificate_is_loaded_and_a_bad_or_encrypted_key_named(tmp_path):
    cert, key = _client_pair(tmp_path)
    env = {"DMTWIN_KAFKA_SECURITY_PROTOCOL": "SSL", "DMTWIN_KAFKA_SSL_CERTFILE": str(cert),
           "DMTWIN_KAFKA_SSL_KEYFILE": str(key)}
    assert isinstance(resolve(env).client()["ssl_context"], ssl.SSLContext)
    other = tmp_path / "other"
    other.mkdir()
    _, wrong = _client_pair(other)
    with pytest.raises(SettingError, match=r"DMTWIN_KAFKA_SSL_CERTFILE=.*DMTWIN_KAFKA_SSL_KEYFILE=.*not a readable PEM "
                                           r"certificate and matching key"):
        resolve({**env, "DMTWIN_KAFKA_SSL_KEYFILE": str(wrong)})
    locked = tmp_path / "locked"
    locked.mkdir()
    locked_cert, encrypted = _client_pair(locked, encrypt=True)
    with pytest.raises(SettingError, match="DMTWIN_KAFKA_SSL_KEYFILE"):  # no prompt on a terminal
        resolve({**env, "DMTWIN_KAFKA_SSL_CERTFILE": str(locked_cert), "DMTWIN_KAFKA_SSL_KEYFILE": str(encrypted)})
