"""Send result objects to a destination: C-STORE (PS3.4 B.2) over one association (over TLS
for a destination marked so), or STOW-RS (PS3.18 10.5) in one multipart request, with the
destination's credentials.

Each object goes in the transfer syntax it was written in (the Secondary Capture is JPEG
Baseline); a C-STORE peer that does not accept that syntax gets it decompressed to Explicit VR
Little Endian, which every Storage SCP accepts (PS3.5 10.1)."""

from __future__ import annotations

import ssl
import uuid
from io import BytesIO
from typing import Any

import httpx
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, Association

from clinassist.errors import ClinassistError
from clinassist.serving.gateway.config import (CStoreDestination, StowRsDestination,
                                               WebhookDestination)

# PS3.4 Table B.2-1: 0000 success; B000, B007, B006 warnings (stored, with coercion).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}
TIMEOUT_S = 30


class DeliveryError(ClinassistError):
    """A destination could not be reached or did not store an object; the job will retry."""


def send(calling_ae_title: str, destination: CStoreDestination | StowRsDestination,
         objects: list[bytes], tls: ssl.SSLContext | None = None) -> None:
    """Store every object (a DICOM file's bytes); raises DeliveryError unless all were stored.
    `tls` is the client context for C-STORE destinations marked `tls`."""
    if isinstance(destination, StowRsDestination):
        stow_rs(destination, objects)
    else:
        c_store(calling_ae_title, destination, objects, tls)


def c_store(calling_ae_title: str, destination: CStoreDestination, objects: list[bytes],
            tls: ssl.SSLContext | None = None) -> None:
    datasets = [dcmread(BytesIO(data)) for data in objects]
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    contexts = {(ds.SOPClassUID, syntax) for ds in datasets
                for syntax in (ds.file_meta.TransferSyntaxUID, ExplicitVRLittleEndian)}
    for sop_class, syntax in sorted(contexts):  # one context each: the peer accepts them apart
        ae.add_requested_context(sop_class, syntax)
    if destination.tls and tls is None:
        raise DeliveryError(f"{destination} is a TLS destination and the gateway has no tls "
                            "settings; add them to gateway.json")
    association = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                               tls_args=(tls, destination.host) if destination.tls else None)
    if not association.is_established:
        remedy = (", trusts our certificate, and has one signed by our CA" if destination.tls
                  else "")
        raise DeliveryError(f"{destination} refused or did not answer the association; check "
                            f"that it is running, accepts our AE title {calling_ae_title}{remedy}")
    try:
        for ds in datasets:
            status = association.send_c_store(_accepted_form(association, ds, destination))
            code = status.get("Status") if status else None
            if code not in STORED:
                raise DeliveryError(f"{destination} did not store a {ds.Modality} object "
                                    f"(status {'none' if code is None else f'0x{code:04X}'}); "
                                    "see its log")
    finally:
        association.release()


def _accepted_form(association: Association, ds: Dataset,
                   destination: CStoreDestination) -> Dataset:
    """`ds` as written if the peer accepted its transfer syntax, else decompressed."""
    accepted = {context.transfer_syntax[0] for context in association.accepted_contexts
                if context.abstract_syntax == ds.SOPClassUID}
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax in accepted:
        return ds
    if syntax.is_compressed and ExplicitVRLittleEndian in accepted:
        ds.decompress(generate_instance_uid=False)  # YBR to RGB; the same instance, still
        return ds  # marked lossy compressed, so a redelivery is not a second instance
    raise DeliveryError(f"{destination} accepts neither {syntax.name} nor Explicit VR Little "
                        f"Endian for {ds.SOPClassUID.name}; add it to the peer's accepted "
                        "transfer syntaxes")


def stow_rs(destination: StowRsDestination, objects: list[bytes]) -> None:
    """POST {base}/studies; only 200 (all stored) counts (PS3.18 10.5.3: 202 and 409 mean some
    or all instances failed)."""
    boundary = uuid.uuid4().hex
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
                    for data in objects) + delimiter + b"--\r\n"
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": "application/dicom+json"}
    _post(destination, f"{destination.url}/studies", {"content": body, "headers": headers},
          accepted=range(200, 201))


def post_json(destination: WebhookDestination, payload: dict) -> None:
    """POST `payload` as JSON; any 2xx answer counts as delivered."""
    _post(destination, destination.url, {"json": payload}, accepted=range(200, 300))


def _post(destination: StowRsDestination | WebhookDestination, url: str, request: dict[str, Any],
          accepted: range) -> None:
    """POST with the destination's credentials (never in a message: a DeliveryError names the
    destination by its URL, which holds none)."""
    if destination.auth is not None:
        credentials = destination.auth.httpx_options()
        request = {**request, **credentials,
                   "headers": {**request.get("headers", {}), **credentials.get("headers", {})}}
    try:
        answer = httpx.post(url, timeout=TIMEOUT_S, **request)
    except httpx.HTTPError as error:
        raise DeliveryError(f"{destination} did not answer ({type(error).__name__}); check "
                            "that it is running and its URL") from None
    if answer.status_code not in accepted:
        raise DeliveryError(f"{destination} answered HTTP {answer.status_code}; see its log")
