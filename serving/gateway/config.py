"""Gateway settings, read from `home/gateway.json` (or a file given on the command line)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
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
class CStoreDestination:
    """A Storage SCP receiving the results by C-STORE (PS3.4 B.2), written "AE_TITLE@host:port"."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "CStoreDestination":
        match = DESTINATION.fullmatch(text)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ConfigError(f"destination {text!r} is not AE_TITLE@host:port, "
                              "e.g. \"ORTHANC@127.0.0.1:4242\"")
        return cls(ae_title(match["ae_title"], "destination"), match["host"], int(match["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class StowRsDestination:
    """A DICOMweb origin server receiving the results by STOW-RS (PS3.18 10.5), written as its
    base URL, e.g. "http://127.0.0.1:8042/dicom-web"."""

    url: str

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class WebhookDestination:
    """A URL receiving each result as FHIR R4 DiagnosticReport JSON, written "webhook:URL"."""

    url: str

    def __str__(self) -> str:
        return f"{WEBHOOK}{self.url}"


Destination = CStoreDestination | StowRsDestination | WebhookDestination
WEBHOOK = "webhook:"
URL_SCHEMES = ("http://", "https://")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_destination(text: str) -> Destination:
    """"webhook:URL", a DICOMweb base URL, or a C-STORE "AE_TITLE@host:port"."""
    if text.startswith(WEBHOOK):
        return WebhookDestination(_url(text.removeprefix(WEBHOOK), text))
    if text.startswith(URL_SCHEMES):
        return StowRsDestination(_url(text, text).rstrip("/"))
    return CStoreDestination.parse(text)


def _url(url: str, setting: str) -> str:
    """`url` if it is https, or http to this machine: results carry patient data."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in LOOPBACK:
        return url
    raise ConfigError(f"destination {setting!r}: results carry patient data, so a URL must be "
                      "https (http only to 127.0.0.1), e.g. "
                      "\"webhook:https://ris.example.org/clinassist\"")


@dataclass(frozen=True)
class GatewayConfig:
    """Where the SCP listens, whom it accepts, where results go and how often delivery retries.

    A delivery that fails waits `backoff_s`, doubling each time up to `max_backoff_s`; after
    `max_attempts` failures the job is dead-lettered until `clinassist gateway retry`.
    """

    allowed_calling_ae_titles: tuple[str, ...]
    ae_title: str = "CLINASSIST"
    host: str = "127.0.0.1"
    port: int = 11112
    destinations: tuple[Destination, ...] = field(default_factory=tuple)
    workers: int = 1
    max_attempts: int = 8
    backoff_s: float = 5.0
    max_backoff_s: float = 600.0

    def __post_init__(self) -> None:
        ae_title(self.ae_title, "ae_title")
        if not self.allowed_calling_ae_titles:
            raise ConfigError("allowed_calling_ae_titles is empty, so every sender would be "
                              "refused; list the AE titles of your PACS, e.g. [\"ORTHANC\"]")
        for calling in self.allowed_calling_ae_titles:
            ae_title(calling, "allowed_calling_ae_titles")
        if (self.workers < 1 or self.max_attempts < 1
                or not 0 < self.backoff_s <= self.max_backoff_s):
            raise ConfigError("workers and max_attempts must be at least 1, and "
                              "0 < backoff_s <= max_backoff_s")

    @classmethod
    def from_dict(cls, values: dict) -> "GatewayConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown gateway settings {sorted(unknown)}; "
                              f"the settings are {sorted(known)}")
        allowed = values.get("allowed_calling_ae_titles", ())
        return cls(**{**values, "allowed_calling_ae_titles": tuple(allowed),
                      "destinations": tuple(parse_destination(d)
                                            for d in values.get("destinations", ()))})

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
                "destinations": [str(d) for d in self.destinations]}
