"""How every dmtwin client reaches Kafka: plaintext, TLS, SASL (SCRAM) or both (docs/security.md).

One ``KafkaSecurity`` holds the settings, from the ``DMTWIN_KAFKA_*`` environment variables and the
``--kafka-*`` flags (a flag wins over its variable), checked once: a bad value is one error naming
the variable or the flag, and the value. It then gives the options of each client library:
``client()`` for aiokafka and kafka-python (they share the names ``security_protocol``,
``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password`` and ``ssl_context``), and
``faust()`` for ``faust.App`` (``broker_credentials``, which Faust hands to its aiokafka clients).

The TLS context verifies the broker's certificate and its host name (as aiokafka's
``create_ssl_context`` does), against ``--kafka-ca`` or else the system's CAs. The password is
never a flag (a command line is visible to every user of the machine): it comes from a file
(``--kafka-password-file``, ``DMTWIN_KAFKA_SASL_PASSWORD_FILE``) or from
``DMTWIN_KAFKA_SASL_PASSWORD``.

Standard library only; Faust is imported by ``faust()`` alone, aiokafka by ``check()`` alone.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KafkaSecurity", "SettingError", "KafkaAccessError", "add_kafka_security_options", "connect",
           "security_from_args", "PROTOCOLS", "MECHANISMS", "OPTIONS"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_MECHANISM = "SCRAM-SHA-512"

OPTIONS: dict[str, tuple[str, str, str]] = {
    "protocol": ("DMTWIN_KAFKA_SECURITY_PROTOCOL", "--kafka-security", "PLAINTEXT (default), SSL, SASL_PLAINTEXT "
                 "or SASL_SSL"),
    "mechanism": ("DMTWIN_KAFKA_SASL_MECHANISM", "--kafka-sasl-mechanism", "SCRAM-SHA-512 (default), "
                  "SCRAM-SHA-256 or PLAIN"),
    "username": ("DMTWIN_KAFKA_SASL_USERNAME", "--kafka-user", "SASL user name"),
    "password_file": ("DMTWIN_KAFKA_SASL_PASSWORD_FILE", "--kafka-password-file", "file holding the SASL "
                      "password (or $DMTWIN_KAFKA_SASL_PASSWORD; never a flag)"),
    "cafile": ("DMTWIN_KAFKA_SSL_CAFILE", "--kafka-ca", "PEM file of the CA(s) that signed the broker's "
               "certificate (default: the system's)"),
    "certfile": ("DMTWIN_KAFKA_SSL_CERTFILE", "--kafka-cert", "PEM client certificate, for brokers that ask "
                 "for one"),
    "keyfile": ("DMTWIN_KAFKA_SSL_KEYFILE", "--kafka-key", "PEM private key of --kafka-cert"),
}
"""field → (environment variable, flag, help)."""
PASSWORD_ENV = "DMTWIN_KAFKA_SASL_PASSWORD"


class SettingError(ValueError):
    """A setting (an environment variable or a flag) holds a value that cannot be used."""


class KafkaAccessError(ConnectionError):
    """The broker refused this client: TLS handshake or SASL login failed (one line, no traceback)."""


@dataclass(frozen=True)
class KafkaSecurity:
    """Checked connection settings; build them with ``resolve`` (``from_env``, ``security_from_args``)."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    _checked: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        return resolve(os.environ if environ is None else environ)

    def client(self) -> dict[str, Any]:
        """Options for aiokafka and kafka-python clients ({} for plaintext)."""
        if self.protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.context
        if self.sasl:
            options.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options

    def faust(self) -> dict[str, Any]:
        """Options for ``faust.App``: ``broker_credentials`` ({} for plaintext)."""
        if self.protocol == "PLAINTEXT":
            return {}
        import faust

        if not self.sasl:
            return {"broker_credentials": faust.SSLCredentials(self.context)}
        credentials = faust.SASLCredentials(username=self.username, password=self.password,
                                            ssl_context=self.context, mechanism=self.mechanism)
        return {"broker_credentials": credentials}

    def describe(self) -> str:
        """``SASL_SSL, SCRAM-SHA-512 as alice`` (no secret)."""
        return self.protocol + (f", {self.mechanism} as {self.username}" if self.sasl else "")

    def check(self, bootstrap: str, timeout_s: float = 15.0) -> None:
        """Open one connection to the first server of ``bootstrap``, TLS handshake and SASL login
        included, and raise ``KafkaAccessError`` if the broker refuses it. The client libraries log
        such a refusal and retry until a timeout, which would hide the cause; network errors are
        left to them (they retry through a broker restart). Once per bootstrap; none for plaintext."""
        if self.protocol == "PLAINTEXT" or bootstrap in self._checked:
            return
        import asyncio
        import concurrent.futures

        from aiokafka.conn import create_conn

        host, _, port = bootstrap.split(",")[0].strip().rpartition(":")

        async def attempt() -> None:
            conn = await asyncio.wait_for(create_conn(host or "localhost", int(port), client_id="dmtwin-check",
                                                      request_timeout_ms=int(timeout_s * 1000), **self.client()),
                                          timeout_s)
            conn.close()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # works inside a running event loop too
            try:
                pool.submit(asyncio.run, attempt()).result()
            except Exception as error:
                refused = self.refused(bootstrap, error)
                if refused is not None:
                    raise refused from None
                return  # not a refusal: the clients will retry and report it
        self._checked.add(bootstrap)

    def refused(self, bootstrap: str, error: BaseException) -> KafkaAccessError | None:
        """A one-line ``KafkaAccessError`` if ``error`` (from any client library) says the broker
        refused this client's TLS handshake or login; None for any other error."""
        cause = _access_cause(error)
        if cause is None:
            return None
        return KafkaAccessError(f"Kafka at {bootstrap} refused the connection ({self.describe()}): {cause}")


def connect(factory: Callable[..., Any], bootstrap: str, security: KafkaSecurity | None, **options: Any) -> Any:
    """A kafka-python client, ``factory(bootstrap_servers=bootstrap, **options)``, through ``security``
    (default: the ``DMTWIN_KAFKA_*`` variables). A refused TLS handshake or SASL login becomes one
    ``KafkaAccessError`` naming the broker and the cause."""
    security = security if security is not None else KafkaSecurity.from_env()
    security.check(bootstrap)
    try:
        return factory(bootstrap_servers=bootstrap, **security.client(), **options)
    except Exception as error:
        refused = security.refused(bootstrap, error)
        if refused is not None:
            raise refused from None
        raise


def _access_cause(error: BaseException | None) -> str | None:
    seen = 0
    while error is not None and seen < 8:
        name = type(error).__name__
        text = re.sub(r"^\[Error -?\d+\] \w+: ", "", str(error).strip()) or name
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"the broker's certificate does not verify: {error.verify_message or text}"
        if isinstance(error, ssl.SSLError):
            return f"TLS handshake failed: {getattr(error, 'reason', None) or text}"
        if name.startswith("UnsupportedSaslMechanism"):
            return "SASL login failed: the broker does not offer this mechanism (--kafka-sasl-mechanism)"
        if "Authentication" in name or "Sasl" in name or "authentication failed" in text.lower():
            return f"SASL login failed: {text.splitlines()[0]}"
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _pick(name: str, environ: Mapping[str, str], flags: Mapping[str, str | None]) -> tuple[str | None, str]:
    """The value of setting ``name`` and where it came from (the flag if given, else the variable)."""
    env, flag, _ = OPTIONS[name]
    if flags.get(name) is not None:
        return flags[name], flag
    value = environ.get(env)
    return (value if value else None), env


def resolve(environ: Mapping[str, str], flags: Mapping[str, str | None] | None = None) -> KafkaSecurity:
    """Check and combine the settings: ``flags`` (field → value or None) over ``environ``."""
    flags = flags or {}
    raw = {name: _pick(name, environ, flags) for name in OPTIONS}
    value, origin = raw["protocol"]
    protocol = (value or "PLAINTEXT").strip().upper().replace("-", "_")
    if protocol not in PROTOCOLS:
        raise SettingError(f"{origin}={value!r}: expected one of {', '.join(PROTOCOLS)}")
    said = f"{origin}={protocol}" if value else f"{origin} is not set (PLAINTEXT)"
    sasl, tls = protocol.startswith("SASL_"), protocol in ("SSL", "SASL_SSL")
    password_env = environ.get(PASSWORD_ENV) or None
    for name in ("mechanism", "username", "password_file"):
        if raw[name][0] is not None and not sasl:
            raise SettingError(f"{raw[name][1]} is set but {said}: SASL needs SASL_SSL or SASL_PLAINTEXT")
    for name in ("cafile", "certfile", "keyfile"):
        if raw[name][0] is not None and not tls:
            raise SettingError(f"{raw[name][1]} is set but {said}: TLS needs SSL or SASL_SSL")
    mechanism = username = password = None
    if sasl:
        value, where = raw["mechanism"]
        mechanism = (value or DEFAULT_MECHANISM).strip().upper()
        if mechanism not in MECHANISMS:
            raise SettingError(f"{where}={value!r}: expected one of {', '.join(MECHANISMS)}")
        username = raw["username"][0]
        if not username:
            raise SettingError(f"{said} needs a user name: {OPTIONS['username'][1]} or {OPTIONS['username'][0]}")
        path, where = raw["password_file"]
        if path is not None and password_env is not None:
            raise SettingError(f"both {where} and {PASSWORD_ENV} are set: give the password one way")
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    password = f.read().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as error:
                raise SettingError(f"{where}={path!r}: cannot read the password: "
                                   f"{getattr(error, 'strerror', None) or error}") from None
            if not password:
                raise SettingError(f"{where}={path!r}: the file is empty")
        else:
            password = password_env
        if not password:
            raise SettingError(f"{said} needs a password: {OPTIONS['password_file'][1]} FILE, "
                               f"{OPTIONS['password_file'][0]} or {PASSWORD_ENV}")
    context = _context(raw) if tls else None
    return KafkaSecurity(protocol, mechanism, username, password, raw["cafile"][0], raw["certfile"][0],
                         raw["keyfile"][0], context)


def _context(raw: Mapping[str, tuple[str | None, str]]) -> ssl.SSLContext:
    """A client TLS context that checks the broker's certificate chain and host name."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    cafile, where = raw["cafile"]
    if cafile is not None:
        try:
            context.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError) as error:
            raise SettingError(f"{where}={cafile!r}: not a readable PEM file of CA certificates "
                               f"({getattr(error, 'strerror', None) or error})") from None
    (certfile, cert_where), (keyfile, key_where) = raw["certfile"], raw["keyfile"]
    if keyfile is not None and certfile is None:
        raise SettingError(f"{key_where} is set but {OPTIONS['certfile'][0]} / {OPTIONS['certfile'][1]} "
                           "is not: a key goes with its certificate")
    if certfile is not None:
        try:
            # An encrypted key fails here rather than OpenSSL prompting on the terminal of a service.
            context.load_cert_chain(certfile, keyfile, password=lambda: b"")
        except (OSError, ssl.SSLError) as error:
            named = f"{cert_where}={certfile!r}" + (f", {key_where}={keyfile!r}" if keyfile else "")
            raise SettingError(f"{named}: not a readable PEM certificate and matching key "
                               f"({getattr(error, 'strerror', None) or error})") from None
    return context


def add_kafka_security_options(parser: argparse.ArgumentParser) -> None:
    """The ``--kafka-*`` flags of every command that talks to Kafka (one group, same names)."""
    group = parser.add_argument_group("Kafka security", "each flag defaults to its DMTWIN_KAFKA_* "
                                      "environment variable; see docs/security.md")
    for name, (env, flag, text) in OPTIONS.items():
        group.add_argument(flag, dest=f"kafka_{name}", help=f"{text} (${env})",
                           metavar={"protocol": "PROTOCOL", "mechanism": "MECHANISM", "username": "NAME"}.get(name, "FILE"))


def security_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
    """The settings of a command: its ``--kafka-*`` flags over the environment."""
    flags = {name: getattr(args, f"kafka_{name}", None) for name in OPTIONS}
    return resolve(os.environ if environ is None else environ, flags)
