"""Gateway settings, read from `home/gateway.json` (or a file given on the command line)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clinassist.errors import ClinassistError

CONFIG_FILE = "gateway.json"
# PS3.5 6.2, VR AE: up to 16 characters, no backslash or control characters, not all spaces.
AE_TITLE = re.compile(r"[ -\[\]-~]{1,16}")
DESTINATION = re.compile(r"(?P<ae_title>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>\d{1,5})")


class ConfigError(ClinassistError):
    """The gateway configuration is invalid; the message says which setting and how to fix it."""


def ae_title(value: str, setting: str) -> str:
    """`value` if it is a valid Application Entity title (PS3.5 6.2), else a ConfigError."""
    if not AE_TITLE.fullmatch(value) or not value.strip():
        raise ConfigError(f"{setting}: {value!r} is not an AE title; use 1 to 16 printable "
                          "ASCII characters without backslash, e.g. \"CLINASSIST\"")
    return value


@dataclass(frozen=True)
class Credentials:
    """What the gateway sends an HTTP server to be let in: a bearer token (RFC 6750) or a user
    name and password (basic, RFC 7617). The secret is written in gateway.json or, better, named
    by the environment variable holding it, and read when it is used: it is never logged, and
    goes only over https or to this machine (see `_url`).

    In gateway.json: {"bearer": T}, {"bearer_env": VAR}, {"username": U, "password": P} or
    {"username": U, "password_env": VAR}.
    """

    username: str | None = None  # None: a bearer token
    secret: str | None = field(default=None, repr=False)
    secret_env: str | None = None

    @classmethod
    def from_dict(cls, values: Any, setting: str) -> "Credentials":
        forms = ({"bearer"}, {"bearer_env"}, {"username", "password"},
                 {"username", "password_env"})
        if not isinstance(values, dict) or set(values) not in forms or not all(
                isinstance(v, str) and v for v in values.values()):
            raise ConfigError(f"{setting}: credentials are {{\"bearer_env\": \"VARIABLE\"}}, "
                              "{\"bearer\": \"TOKEN\"}, or a \"username\" with \"password\" "
                              "or \"password_env\"; prefer the _env forms, which keep the secret "
                              "out of the file")
        return cls(username=values.get("username"),
                   secret=values.get("bearer", values.get("password")),
                   secret_env=values.get("bearer_env", values.get("password_env")))

    def to_dict(self) -> dict[str, str]:
        kind = "bearer" if self.username is None else "password"
        written = ({f"{kind}_env": self.secret_env} if self.secret_env
                   else {kind: self.secret or ""})
        return written if self.username is None else {"username": self.username, **written}

    def resolve(self) -> str:
        """The secret, from the file or the environment; ConfigError naming the variable."""
        if self.secret_env is None:
            return self.secret or ""
        value = os.environ.get(self.secret_env)
        if not value:
            raise ConfigError(f"the environment variable {self.secret_env} named in gateway.json "
                              "is not set; export it where the gateway runs")
        return value

    def httpx_options(self) -> dict[str, Any]:
        """Keyword arguments for httpx that send these credentials."""
        if self.username is None:
            return {"headers": {"Authorization": f"Bearer {self.resolve()}"}}
        return {"auth": (self.username, self.resolve())}


@dataclass(frozen=True)
class CStoreDestination:
    """A Storage SCP receiving the results by C-STORE (PS3.4 B.2), written "AE_TITLE@host:port";
    `tls` associates over TLS (PS3.15 B.1) with the gateway's `tls` certificate."""

    ae_title: str
    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, text: str, tls: bool = False) -> "CStoreDestination":
        match = DESTINATION.fullmatch(text)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ConfigError(f"destination {text!r} is not AE_TITLE@host:port, "
                              "e.g. \"ORTHANC@127.0.0.1:4242\"")
        return cls(ae_title(match["ae_title"], "destination"), match["host"], int(match["port"]),
                   tls)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class StowRsDestination:
    """A DICOMweb origin server receiving the results by STOW-RS (PS3.18 10.5), written as its
    base URL, e.g. "http://127.0.0.1:8042/dicom-web"."""

    url: str
    auth: Credentials | None = None

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class WebhookDestination:
    """A URL receiving each result as FHIR R4 DiagnosticReport JSON, written "webhook:URL"."""

    url: str
    auth: Credentials | None = None

    def __str__(self) -> str:
        return f"{WEBHOOK}{self.url}"


Destination = CStoreDestination | StowRsDestination | WebhookDestination
WEBHOOK = "webhook:"
URL_SCHEMES = ("http://", "https://")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The object form of a destination: its kind, and the options that kind takes.
DESTINATION_KINDS = {"c-store": {"tls"}, "stow-rs": {"auth"}, "webhook": {"auth"}}


def parse_destination(text: str) -> Destination:
    """"webhook:URL", a DICOMweb base URL, or a C-STORE "AE_TITLE@host:port"."""
    if text.startswith(WEBHOOK):
        return WebhookDestination(_url(text.removeprefix(WEBHOOK), text))
    if text.startswith(URL_SCHEMES):
        return StowRsDestination(_url(text, text).rstrip("/"))
    return CStoreDestination.parse(text)


def destination_from_config(value: Any) -> Destination:
    """A destination as gateway.json writes it: the string form of `parse_destination`, or an
    object naming its kind with options, e.g. {"c-store": "PACS@pacs:2762", "tls": true},
    {"stow-rs": "https://pacs/dicom-web", "auth": {"bearer_env": "PACS_TOKEN"}}."""
    if isinstance(value, str):
        return parse_destination(value)
    kinds = set(value) & set(DESTINATION_KINDS) if isinstance(value, dict) else set()
    if len(kinds) != 1 or not isinstance(value[next(iter(kinds))], str):
        raise ConfigError(f"destination {value!r} is neither a string nor an object with one of "
                          f"{sorted(DESTINATION_KINDS)}, e.g. "
                          "{\"c-store\": \"PACS@pacs.example.org:2762\", \"tls\": true}")
    kind = kinds.pop()
    target, options = value[kind], set(value) - {kind}
    if not options <= DESTINATION_KINDS[kind]:
        raise ConfigError(f"destination {target!r}: {kind} takes {sorted(DESTINATION_KINDS[kind])},"
                          f" not {sorted(options - DESTINATION_KINDS[kind])}")
    if kind == "c-store":
        if not isinstance(value.get("tls", False), bool):
            raise ConfigError(f"destination {target!r}: tls is true or false")
        return CStoreDestination.parse(target, value.get("tls", False))
    auth = Credentials.from_dict(value["auth"], f"destination {target!r}") \
        if "auth" in value else None
    if kind == "webhook":
        return WebhookDestination(_url(target, target), auth)
    return StowRsDestination(_url(target, target).rstrip("/"), auth)


def destination_to_config(destination: Destination) -> str | dict[str, Any]:
    """The gateway.json form of `destination` (the inverse of `destination_from_config`)."""
    if isinstance(destination, CStoreDestination):
        return {"c-store": str(destination), "tls": True} if destination.tls else str(destination)
    if destination.auth is None:
        return str(destination)
    kind = "webhook" if isinstance(destination, WebhookDestination) else "stow-rs"
    return {kind: destination.url, "auth": destination.auth.to_dict()}


def _url(url: str, setting: str) -> str:
    """`url` if it is https, or http to this machine: results and credentials carry secrets,
    and credentials never travel in the URL itself."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{setting!r}: a URL must not hold credentials; give them as \"auth\", "
                          "e.g. {\"username\": \"clinassist\", \"password_env\": \"VARIABLE\"}")
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in LOOPBACK:
        return url
    raise ConfigError(f"{setting!r}: results and credentials carry patient data and secrets, so "
                      "a URL must be https (http only to 127.0.0.1), e.g. "
                      "\"webhook:https://ris.example.org/clinassist\"")


@dataclass(frozen=True)
class OrthancFeed:
    """The Orthanc whose change log the gateway follows to catch up on what was not pushed.

    `url` is its REST root, `auth` its credentials (Orthanc uses HTTP basic), `poll_s` how often
    it is read once caught up, and `max_backlog` how many fetched instances may wait for
    triage before catch-up pauses (it bounds the disk catch-up uses).
    """

    url: str
    auth: Credentials | None = None
    poll_s: float = 10.0
    max_backlog: int = 32

    @classmethod
    def from_dict(cls, values: Any) -> "OrthancFeed":
        known = set(cls.__dataclass_fields__)
        if not isinstance(values, dict) or "url" not in values or set(values) - known:
            raise ConfigError(f"orthanc is an object with \"url\" (Orthanc's REST root) and "
                              f"optionally {sorted(known - {'url'})}, e.g. "
                              "{\"url\": \"http://127.0.0.1:8042\", \"auth\": {\"username\": "
                              "\"clinassist\", \"password_env\": \"ORTHANC_PASSWORD\"}}")
        feed = cls(url=_url(str(values["url"]), "orthanc.url").rstrip("/"),
                   auth=Credentials.from_dict(values["auth"], "orthanc.auth")
                   if "auth" in values else None,
                   poll_s=values.get("poll_s", cls.poll_s),
                   max_backlog=values.get("max_backlog", cls.max_backlog))
        if not (isinstance(feed.poll_s, (int, float)) and feed.poll_s > 0
                and isinstance(feed.max_backlog, int) and feed.max_backlog >= 1):
            raise ConfigError("orthanc.poll_s must be a positive number of seconds and "
                              "orthanc.max_backlog a whole number of at least 1")
        return feed

    def to_dict(self) -> dict[str, Any]:
        written: dict[str, Any] = {"url": self.url, "poll_s": self.poll_s,
                                   "max_backlog": self.max_backlog}
        return written if self.auth is None else {**written, "auth": self.auth.to_dict()}


@dataclass(frozen=True)
class TlsSettings:
    """DICOM TLS (PS3.15 B.1): the gateway's certificate and key, presented by its SCP and to
    C-STORE destinations marked `tls`, and the CA certificates it trusts for its peers. With
    `require_client_certificate`, a sender must present a certificate that CA signed."""

    certificate: Path
    private_key: Path
    ca_certificates: Path
    require_client_certificate: bool = True

    @classmethod
    def from_dict(cls, values: Any) -> "TlsSettings":
        files = ("certificate", "private_key", "ca_certificates")
        if (not isinstance(values, dict) or not set(files) <= set(values)
                or set(values) - set(cls.__dataclass_fields__)):
            raise ConfigError("tls is an object with \"certificate\", \"private_key\" and "
                              "\"ca_certificates\" (PEM files) and optionally "
                              "\"require_client_certificate\" (default true)")
        settings = cls(*(Path(values[name]).expanduser() for name in files),
                       require_client_certificate=values.get("require_client_certificate", True))
        for name in files:
            if not getattr(settings, name).is_file():
                raise ConfigError(f"tls.{name}: no file at {getattr(settings, name)}; give the "
                                  "path of a PEM file readable by the gateway")
        return settings

    def to_dict(self) -> dict[str, Any]:
        return {"certificate": str(self.certificate), "private_key": str(self.private_key),
                "ca_certificates": str(self.ca_certificates),
                "require_client_certificate": self.require_client_certificate}


@dataclass(frozen=True)
class GatewayConfig:
    """Where the SCP listens, whom it accepts, where results go and how often delivery retries.

    A delivery that fails waits `backoff_s`, doubling each time up to `max_backoff_s`; after
    `max_attempts` failures the job is dead-lettered until `clinassist gateway retry`.

    Several gateways may share one queue (PostgreSQL): each claims work with a lease of
    `lease_s`, which another gateway takes over once it expires, and all of them keep received
    instances in one shared `spool` folder (default: `home/gateway/instances`, this gateway's).
    """

    allowed_calling_ae_titles: tuple[str, ...]
    ae_title: str = "CLINASSIST"
    host: str = "127.0.0.1"
    port: int = 11112
    destinations: tuple[Destination, ...] = field(default_factory=tuple)
    workers: int = 4  # a delivery waits on the PACS: more workers than cores keep them busy
    max_attempts: int = 8
    backoff_s: float = 5.0
    max_backoff_s: float = 600.0
    orthanc: OrthancFeed | None = None
    tls: TlsSettings | None = None
    lease_s: float = 60.0
    spool: str | None = None

    def __post_init__(self) -> None:
        ae_title(self.ae_title, "ae_title")
        if not self.allowed_calling_ae_titles:
            raise ConfigError("allowed_calling_ae_titles is empty, so every sender would be "
                              "refused; list the AE titles of your PACS, e.g. [\"ORTHANC\"]")
        for calling in self.allowed_calling_ae_titles:
            ae_title(calling, "allowed_calling_ae_titles")
        if (self.workers < 1 or self.max_attempts < 1
                or not 0 < self.backoff_s <= self.max_backoff_s or not self.lease_s > 0):
            raise ConfigError("workers and max_attempts must be at least 1, "
                              "0 < backoff_s <= max_backoff_s and lease_s > 0")
        over_tls = [str(d) for d in self.destinations
                    if isinstance(d, CStoreDestination) and d.tls]
        if over_tls and self.tls is None:
            raise ConfigError(f"destinations {over_tls} use TLS but there are no tls settings; "
                              "add \"tls\": {\"certificate\": ..., \"private_key\": ..., "
                              "\"ca_certificates\": ...}")

    @classmethod
    def from_dict(cls, values: dict) -> "GatewayConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown gateway settings {sorted(unknown)}; "
                              f"the settings are {sorted(known)}")
        allowed = values.get("allowed_calling_ae_titles", ())
        nested = {"orthanc": OrthancFeed.from_dict, "tls": TlsSettings.from_dict}
        return cls(**{**values, "allowed_calling_ae_titles": tuple(allowed),
                      "destinations": tuple(destination_from_config(d)
                                            for d in values.get("destinations", ())),
                      **{key: parse(values[key]) for key, parse in nested.items()
                         if values.get(key) is not None}})

    @classmethod
    def load(cls, path: Path) -> "GatewayConfig":
        if not path.is_file():
            raise ConfigError(f"no gateway configuration at {path}; write one with at least "
                              "{\"allowed_calling_ae_titles\": [\"YOUR_PACS\"]}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as error:
            raise ConfigError(f"{path} is not a JSON object of gateway settings ({error}); "
                              "see the README section \"Connect your PACS\"") from None

    def to_dict(self) -> dict:
        return {**self.__dict__, "allowed_calling_ae_titles": list(self.allowed_calling_ae_titles),
                "destinations": [destination_to_config(d) for d in self.destinations],
                "orthanc": self.orthanc and self.orthanc.to_dict(),
                "tls": self.tls and self.tls.to_dict()}

    def credentials(self) -> list[Credentials]:
        """Every credential the settings name (each must resolve before the gateway starts)."""
        found = [d.auth for d in self.destinations
                 if isinstance(d, (StowRsDestination, WebhookDestination)) and d.auth]
        return found + ([self.orthanc.auth] if self.orthanc and self.orthanc.auth else [])
