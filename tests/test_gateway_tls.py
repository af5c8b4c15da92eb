"""Transport security: DICOM TLS at the SCP (dcmtk's storescu over TLS gets in; plain TCP and a
certificate from another CA do not) and to a C-STORE destination (dcmtk's storescp over TLS
receives the results); credentials of STOW-RS and webhook destinations are sent, from the
environment, and never logged."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clinassist.serving.gateway.config import ConfigError, GatewayConfig
from clinassist.serving.gateway.gateway import Gateway, open_queue
from dicom_fixtures import to_bytes
from service_process import free_port
from test_gateway_support import (GatewayProcess, Webhook, processes, radiograph,  # noqa: F401
                                  send, shared_models, wait_for, write_config)

dcmtk = pytest.mark.skipif(not (shutil.which("storescu") and shutil.which("storescp")),
                           reason="needs the Debian package dcmtk")


@dataclass(frozen=True)
class Identity:
    """A PEM certificate and its unencrypted PEM key on disk."""

    certificate: Path
    key: Path


class Authority:
    """A throwaway certification authority issuing loopback certificates."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = self._builder(subject, self.key).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(
            self.key, hashes.SHA256())
        self.path = folder / f"{name}.crt"
        self.path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str) -> Identity:
        """A certificate for 127.0.0.1 and localhost, for a server and a client alike."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        certificate = self._builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key).add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False).sign(
            self.key, hashes.SHA256())
        identity = Identity(self.folder / f"{name}.crt", self.folder / f"{name}.key")
        identity.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        identity.key.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        return identity

    def _builder(self, subject: x509.Name, key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(subject)
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)]))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))


@pytest.fixture
def pki(tmp_path):
    folder = tmp_path / "pki"
    folder.mkdir()
    return Authority(folder, "site-ca")


def tls_settings(pki: Authority, gateway: Identity) -> dict:
    return {"certificate": str(gateway.certificate), "private_key": str(gateway.key),
            "ca_certificates": str(pki.path)}


def storescu(port: int, instance: Path, *tls: str) -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", *tls, "-aet", "PACS", "-aec", "CLINASSIST", "127.0.0.1",
                           str(port), str(instance)], capture_output=True, text=True, timeout=60)


def over_tls(identity: Identity, ca: Path) -> tuple[str, ...]:
    return ("+tls", str(identity.key), str(identity.certificate), "-pw", "+cf", str(ca))


@dcmtk
def test_the_scp_speaks_tls_only_to_senders_with_a_certificate_of_its_ca(tmp_path, pki):
    home = tmp_path / "home"
    config = GatewayConfig.load(write_config(home, tls=tls_settings(pki, pki.issue("gateway"))))
    gateway = Gateway(home, config, shared_models())
    gateway.start()
    try:
        instances = []
        for index in range(3):
            instances.append(tmp_path / f"{index}.dcm")
            instances[-1].write_bytes(to_bytes(radiograph(index)))
        pacs = pki.issue("pacs")
        sent = storescu(config.port, instances[0], *over_tls(pacs, pki.path))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert storescu(config.port, instances[1]).returncode != 0  # plain TCP
        rogue = Authority(tmp_path / "pki", "rogue-ca").issue("rogue")
        assert storescu(config.port, instances[2], *over_tls(rogue, pki.path)).returncode != 0
        assert len(gateway.queue.jobs()) == 1
    finally:
        gateway.stop()


@dcmtk
def test_results_reach_a_c_store_destination_over_tls(tmp_path, pki):
    received, port = tmp_path / "received", free_port()
    received.mkdir()
    destination = pki.issue("destination")
    storescp = subprocess.Popen(["storescp", "+tls", str(destination.key),
                                 str(destination.certificate), "-pw", "+cf", str(pki.path),
                                 "-aet", "PACS", "-od", str(received), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    home = tmp_path / "home"
    config = GatewayConfig.load(write_config(
        home, tls=tls_settings(pki, pki.issue("gateway")),
        destinations=[{"c-store": f"PACS@127.0.0.1:{port}", "tls": True}]))
    gateway = Gateway(home, config, shared_models())
    gateway.start()
    try:
        instance = tmp_path / "cr.dcm"
        instance.write_bytes(to_bytes(radiograph(1)))
        sent = storescu(config.port, instance, *over_tls(pki.issue("pacs"), pki.path))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_for(lambda: gateway.queue.counts() == {"done": 1}, 60, "the results delivered")
        assert sorted(path.name[:2] for path in received.iterdir()) == ["SC", "SR"]
    finally:
        gateway.stop()
        storescp.terminate()
        storescp.wait(timeout=10)


def test_a_tls_destination_needs_the_tls_settings():
    with pytest.raises(ConfigError, match="use TLS but there are no tls settings"):
        GatewayConfig.from_dict({"allowed_calling_ae_titles": ["PACS"],
                                 "destinations": [{"c-store": "PACS@pacs:2762", "tls": True}]})


def test_missing_certificate_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="tls.certificate: no file at"):
        GatewayConfig.from_dict({"allowed_calling_ae_titles": ["PACS"], "tls": {
            "certificate": str(tmp_path / "none.crt"), "private_key": str(tmp_path / "k"),
            "ca_certificates": str(tmp_path / "ca")}})


def test_credentials_from_the_environment_are_sent_and_never_logged(tmp_path, processes):
    token, password = "tok-3f9a-bearer-SECRET", "pw-77c1-basic-SECRET"
    webhook, stow = Webhook(), Webhook(status=200)
    try:
        config = GatewayConfig.load(write_config(tmp_path, destinations=[
            {"webhook": webhook.url, "auth": {"bearer_env": "TEST_WEBHOOK_TOKEN"}},
            {"stow-rs": stow.url, "auth": {"username": "clinassist",
                                           "password_env": "TEST_STOW_PASSWORD"}}]))
        processes.append(GatewayProcess(tmp_path, config.port, env={
            "TEST_WEBHOOK_TOKEN": token, "TEST_STOW_PASSWORD": password}).start())
        send(config.port, [radiograph(3)])
        queue = open_queue(tmp_path, config)
        wait_for(lambda: queue.counts() == {"done": 1}, 60, "both deliveries")
    finally:
        webhook.stop()
        stow.stop()
    [(_, hook_headers, _)] = webhook.requests
    [(path, stow_headers, _)] = stow.requests
    assert hook_headers["Authorization"] == f"Bearer {token}"
    assert path.endswith("/studies") and stow_headers["Authorization"].startswith("Basic ")
    log = (tmp_path / "gateway.log").read_text()
    assert "delivered" in log and token not in log and password not in log


def test_a_credential_variable_missing_stops_the_start_with_its_name(tmp_path):
    config = GatewayConfig.load(write_config(tmp_path, destinations=[
        {"webhook": "https://ris.example.org/hook", "auth": {"bearer_env": "TEST_UNSET_TOKEN"}}]))
    with pytest.raises(ConfigError, match="TEST_UNSET_TOKEN"):
        Gateway(tmp_path, config, shared_models())
