"""DICOM over TLS (PS3.15 B.1, the BCP 195 profiles): the `ssl.SSLContext`s pynetdicom takes
for the SCP (`start_server(..., ssl_context=)`) and for associations to C-STORE destinations
(`associate(..., tls_args=(context, hostname))`), built from the gateway's `tls` settings.

Both sides present the gateway's certificate and trust only the configured CA certificates;
TLS 1.2 is the oldest version offered, as BCP 195 asks.
"""

from __future__ import annotations

import ssl

from clinassist.serving.gateway.config import ConfigError, TlsSettings


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """For the SCP: our certificate, and the senders' certificates verified against the CA
    (required unless `require_client_certificate` is false)."""
    context = _context(ssl.PROTOCOL_TLS_SERVER, settings)
    context.verify_mode = (ssl.CERT_REQUIRED if settings.require_client_certificate
                           else ssl.CERT_OPTIONAL)
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """For associations to destinations: their certificate verified against the CA, with
    their host name, and ours presented for them to verify."""
    context = _context(ssl.PROTOCOL_TLS_CLIENT, settings)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _context(protocol: int, settings: TlsSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.certificate, settings.private_key)
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(f"tls: the certificate {settings.certificate} and private key "
                          f"{settings.private_key} cannot be used together "
                          f"({error.__class__.__name__}); give a PEM certificate and its "
                          "unencrypted PEM key") from None
    try:
        context.load_verify_locations(cafile=settings.ca_certificates)
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(f"tls.ca_certificates: {settings.ca_certificates} holds no PEM "
                          f"certificate ({error.__class__.__name__}); give the CA that signs "
                          "your PACS's and the gateway's certificates") from None
    return context
