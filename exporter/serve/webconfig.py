"""The web configuration file of the Prometheus exporter-toolkit: TLS and basic auth.

Operators already write this file for node_exporter and friends; accepting the same
format (``tls_server_config``, ``basic_auth_users`` with bcrypt hashes,
``http_server_config.headers``) means one way to protect every exporter.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from exporter.config import ConfigError

_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# What bcrypt.hashpw writes: a checked shape, so a typo fails at start-up and not per request.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request: ``user`` is None when no basic auth is configured.

    Always truthy, so ``if not web.authorized(...)`` still reads as the auth check.
    """

    user: str | None


ANONYMOUS = Identity(None)


@dataclass
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # bcrypt is slow on purpose; remember passwords already checked (keyed by a hash of
    # both, like exporter-toolkit's cache) so a 15 s scrape does not burn CPU.
    _verified: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def auth_required(self) -> bool:
        return bool(self.users)

    def authorized(self, authorization: str | None) -> Identity | None:
        """The authenticated user (the status page scopes by it), or None for a 401."""
        if not self.users:
            return ANONYMOUS
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        hashed = self.users.get(user)
        if not sep or hashed is None:
            return None
        cache_key = hmac.digest(hashed, password.encode(), "sha256")
        with self._lock:
            if cache_key in self._verified:
                return Identity(user)
        if bcrypt.checkpw(password.encode(), hashed):
            with self._lock:
                self._verified.add(cache_key)
            return Identity(user)
        return None


def _fail(path: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"--web.config.file {path}: {key}", message)


def load_web_config(path: str) -> WebConfig:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError("--web.config.file", f"cannot read {path!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("--web.config.file", f"{path}: not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("--web.config.file", f"{path}: not valid YAML") from exc
    if not isinstance(data, Mapping):
        raise _fail(path, "(top level)", "must be a mapping")
    for key in data:
        if key not in _TOP_KEYS:
            raise _fail(path, str(key), "unknown key")
    base = Path(path).resolve().parent
    config = WebConfig()
    tls = data.get("tls_server_config")
    if tls:
        config.tls = _tls_context(path, base, tls)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, Mapping):
        raise _fail(path, "basic_auth_users", "must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            # Never echo the value: it may be a plain password pasted by mistake.
            raise _fail(path, f"basic_auth_users.{user}", "must be a bcrypt hash")
        config.users[str(user)] = hashed.encode()
    http = data.get("http_server_config") or {}
    if not isinstance(http, Mapping):
        raise _fail(path, "http_server_config", "must be a mapping")
    for key in http:
        if key not in ("headers", "http2"):
            raise _fail(path, f"http_server_config.{key}", "unknown key")
    headers = http.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise _fail(path, "http_server_config.headers", "must map header names to values")
    config.headers = {str(k): str(v) for k, v in headers.items()}
    return config


def _tls_context(path: str, base: Path, tls: Any) -> ssl.SSLContext:
    if not isinstance(tls, Mapping):
        raise _fail(path, "tls_server_config", "must be a mapping")
    for key in tls:
        if key not in _TLS_KEYS:
            raise _fail(path, f"tls_server_config.{key}", "unknown key")
    for key in ("cert_file", "key_file"):
        if not tls.get(key):
            raise _fail(path, f"tls_server_config.{key}", "required when TLS is configured")
    for key in ("cert_file", "key_file", "client_ca_file", "min_version", "max_version"):
        if key in tls and not isinstance(tls[key], str):
            raise _fail(path, f"tls_server_config.{key}", f"must be a string, got {tls[key]!r}")
        if key.endswith("_file") and tls.get(key) and not (base / tls[key]).is_file():
            raise _fail(path, f"tls_server_config.{key}", f"no such file: {tls[key]!r}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(base / tls["cert_file"], base / tls["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise _fail(path, "tls_server_config.cert_file", f"cannot load: {exc}") from exc
    if "min_version" in tls:
        if tls["min_version"] not in _TLS_VERSIONS:
            raise _fail(path, "tls_server_config.min_version", f"unknown: {tls['min_version']!r}")
        context.minimum_version = _TLS_VERSIONS[tls["min_version"]]
    if "max_version" in tls:
        if tls["max_version"] not in _TLS_VERSIONS:
            raise _fail(path, "tls_server_config.max_version", f"unknown: {tls['max_version']!r}")
        context.maximum_version = _TLS_VERSIONS[tls["max_version"]]
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if not isinstance(auth_type, str) or auth_type not in _CLIENT_AUTH:
        raise _fail(path, "tls_server_config.client_auth_type", f"unknown: {auth_type!r}")
    context.verify_mode = _CLIENT_AUTH[auth_type]
    if tls.get("client_ca_file"):
        try:
            context.load_verify_locations(base / tls["client_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise _fail(path, "tls_server_config.client_ca_file", f"cannot load: {exc}") from exc
    elif "Verify" in auth_type:
        raise _fail(path, "tls_server_config.client_ca_file", f"required by {auth_type}")
    return context
