"""Fuzzing the gateway's SCP with raw C-STOREs, shared by tests/test_gateway_fuzz.py (a bounded,
seeded few hundred inputs) and benchmarks/fuzz_scp.py (>= 10,000).

The instances are the HTTP fuzzer's DICOM strategies (`http_fuzz.dicom_payloads`: radiographs
damaged element by element, byte-level damage, noise), plus radiographs whose IS, DS or UI
values carry the fake patient's name or ID (pydicom quotes such values when it warns), each
sent as the data set of a C-STORE exactly as its bytes are, under a CR or DX presentation
context. A `StoreTally` counts the answers by status and keeps what breaks the rules: no answer
(a dropped association), pynetdicom's "exception in the handler" status, a failure without an
error comment, or any status the gateway does not define.
"""

from __future__ import annotations

import io
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                         DigitalXRayImageStorageForProcessing, ExplicitVRBigEndian,
                         ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless,
                         RLELossless, generate_uid)
from pynetdicom import AE, _config

from clinassist.serving.gateway.inspection import StoreStatus
from http_fuzz import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, dicom_payloads, encode, radiographs
from test_gateway_support import GATEWAY, PACS

RADIOGRAPH_CLASSES = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                      DigitalXRayImageStorageForProcessing)
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                     RLELossless, JPEG2000Lossless)
DEFINED = {int(status) for status in StoreStatus}
HANDLER_EXCEPTION = 0xC211  # what pynetdicom answers when a handler raises
# Elements whose value pydicom converts (and quotes in its warning when it cannot).
CONVERTED = {"InstanceNumber": "IS", "SeriesNumber": "IS", "RescaleSlope": "DS",
             "WindowCenter": "DS", "PixelSpacing": "DS", "FrameOfReferenceUID": "UI"}


@st.composite
def identifiers_in_numbers(draw) -> bytes:
    """A radiograph with the fake patient's name or ID as the value of a converted element."""
    ds = draw(radiographs())
    keyword = draw(st.sampled_from(sorted(CONVERTED)))
    value = draw(st.sampled_from([FAKE_PATIENT_NAME, FAKE_PATIENT_ID])).encode()
    value += b" " * (len(value) % 2)
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, CONVERTED[keyword], len(value), value, 0, False, True)
    return encode(ds)


def scp_payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(dicom_payloads(), identifiers_in_numbers())


@dataclass(frozen=True)
class Store:
    """One C-STORE as it goes on the wire: the request's UIDs and the data set's bytes."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data_set: bytes

    @classmethod
    def of(cls, payload: bytes) -> "Store":
        """The Part 10 file's data set after its file meta, under the transfer syntax and UIDs
        its meta declares when the gateway negotiates them; bytes without a readable file meta
        go whole, as an Explicit VR Little Endian CR."""
        (syntax, sop_class, instance), start = _split(payload)
        if sop_class not in RADIOGRAPH_CLASSES:
            sop_class = ComputedRadiographyImageStorage
        return cls(sop_class,
                   instance if instance.replace(".", "").isdigit() and len(instance) <= 64
                   else generate_uid(),
                   syntax if syntax in TRANSFER_SYNTAXES else ExplicitVRLittleEndian,
                   payload[start:])

    def as_file(self, folder: Path) -> Path:
        """A file pynetdicom sends as it is: a file meta of ours, then the data set's bytes."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = self.sop_class_uid
        meta.MediaStorageSOPInstanceUID = self.sop_instance_uid
        meta.TransferSyntaxUID = self.transfer_syntax_uid
        buffer = io.BytesIO()
        buffer.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(buffer, meta, enforce_standard=True)
        path = folder / "store.dcm"
        path.write_bytes(buffer.getvalue() + self.data_set)
        return path


def _split(payload: bytes) -> tuple[tuple[str, str, str], int]:
    """The file meta's transfer syntax, SOP Class and SOP Instance UIDs and where the data set
    starts (after the preamble, 'DICM' and the group 0002 elements), as pynetdicom's
    `split_dataset` reads a file; empty UIDs and the whole payload for other bytes."""
    stream = io.BytesIO(payload)
    try:
        read_preamble(stream, False)
        meta = read_dataset(stream, is_implicit_VR=False, is_little_endian=True,
                            stop_when=lambda tag, vr, length: tag.group != 2)
        return tuple(str(meta.get(keyword) or "") for keyword in (  # type: ignore[return-value]
            "TransferSyntaxUID", "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")), \
            stream.tell()
    except Exception:  # not a Part 10 file, or a damaged meta: the bytes go whole
        return ("", "", ""), 0


@dataclass
class StoreTally:
    """C-STORE answers by status; `failures` are those that break the rules."""

    statuses: Counter = field(default_factory=Counter)
    comments: Counter = field(default_factory=Counter)  # (status, error comment)
    dropped: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + self.dropped

    def record(self, status: int | None, comment: str | None) -> None:
        if status is None:
            self.dropped += 1
            self.failures.append("no answer: the association dropped")
            return
        self.statuses[status] += 1
        self.comments[status, comment or ""] += 1
        if status == HANDLER_EXCEPTION or status not in DEFINED:
            self.failures.append(f"status 0x{status:04X} ({comment})")
        elif status != StoreStatus.SUCCESS and not comment:
            self.failures.append(f"status 0x{status:04X} without an error comment")

    def report(self) -> dict[str, object]:
        return {"sent": self.sent, "dropped": self.dropped,
                "by_status": {f"0x{s:04X} {_name(s)}": n for s, n in sorted(self.statuses.items())},
                "by_comment": {f"0x{s:04X} {c}": n for (s, c), n in sorted(self.comments.items())},
                "failures": len(self.failures)}


def _name(status: int) -> str:
    return StoreStatus(status).name if status in DEFINED else "UNDEFINED"


class StoreSender:
    """Raw C-STOREs to the gateway over one association, opened again after a drop."""

    def __init__(self, port: int, calling: str = PACS, called: str = GATEWAY) -> None:
        self.port, self.calling, self.called = port, calling, called
        self.ae = AE(ae_title=calling)
        for sop_class in RADIOGRAPH_CLASSES:
            for syntax in TRANSFER_SYNTAXES:  # one context per pair: the SCP accepts each
                self.ae.add_requested_context(sop_class, syntax)
        self._association = None
        self._folder = tempfile.TemporaryDirectory(prefix="scp-fuzz-")
        _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's data set as it is

    def send(self, payload: bytes) -> tuple[int | None, str | None]:
        """The status and error comment the gateway answered (None, None: no answer)."""
        if self._association is None or not self._association.is_established:
            self._association = self.ae.associate("127.0.0.1", self.port, ae_title=self.called)
            if not self._association.is_established:
                return None, None
        path = Store.of(payload).as_file(Path(self._folder.name))
        answer = self._association.send_c_store(path)
        if "Status" not in answer:
            self._association.abort()
            return None, None
        return int(answer.Status), answer.get("ErrorComment")

    def close(self) -> None:
        if self._association is not None and self._association.is_established:
            self._association.release()
        self._folder.cleanup()
