"""Fuzzing the HTTP entry points of `clinassist serve`, shared by tests/test_fuzz_http.py (a
bounded, seeded few hundred inputs) and benchmarks/fuzz_http.py (>= 10,000 per entry point).

- `POST /v1/imaging/triage` gets DICOM from Hypothesis strategies: valid radiographs whose
  header is then damaged element by element (values of the wrong form, raw bytes of the wrong
  length, attributes removed, mismatched transfer syntaxes), byte-level damage of whole encoded
  files, and plain noise, sent as one `application/dicom` body, `multipart/related` or
  `multipart/form-data` (with damaged multipart framing too).
- Every other `/v1` operation gets Schemathesis cases generated from the service's own
  OpenAPI (`/docs.json`), schema-conforming and schema-violating.

Every instance carries `FAKE_PATIENT_NAME` and `FAKE_PATIENT_ID`, so the service's log can be
searched for them afterwards. A `Tally` counts responses by status and keeps what breaks the
rules: a status >= 500, a dropped connection, a 4xx that is not JSON `{error, reason}`.
"""

from __future__ import annotations

import io
import json
import threading
from contextlib import contextmanager
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import numpy as np
import requests
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from pydicom import config as pydicom_config
from pydicom import dcmwrite
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
    generate_uid,
)

FAKE_PATIENT_NAME = "Fuzzington^Quillon"
FAKE_PATIENT_ID = "FZQ-7731-0042"
TRIAGE = "/v1/imaging/triage"
TRIAGE_KINDS = ("single", "related", "form-data")

# --- DICOM instances ---------------------------------------------------------------------

SOP_CLASSES = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
               DigitalXRayImageStorageForProcessing, "1.2.840.10008.5.1.4.1.1.88.34",  # 3D SR
               "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.2",  # SC, CT
               "1.2.3.4.5.6.7.8.9", "1.2.840.10008.1.1", "", "not.a.uid", "1..2", "0" * 70)
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                     DeflatedExplicitVRLittleEndian, RLELossless, JPEG2000Lossless, JPEG2000,
                     JPEGBaseline8Bit, JPEGLSLossless, "1.2.840.10008.1.2.4.100",  # MPEG-2
                     "1.2.3.999", "", "garbage")
IDENTIFIERS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
REMOVABLE = (*IDENTIFIERS, "Modality", "Rows", "Columns", "BitsAllocated", "BitsStored",
             "HighBit", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation",
             "PixelData", "BodyPartExamined", "ViewPosition", "PatientOrientation", "PatientName",
             "PatientID")
TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\x00"), max_size=24)
NUMBER_TEXT = st.one_of(st.sampled_from(["", "abc", "1.5", "-1", "nan", "inf", "1e999", "0x10",
                                         " 7 ", "12a", "1\\2", "99999999999999999999"]),
                        st.integers(-(2**40), 2**40).map(str), TEXT)
VALUES = {  # keyword -> values, well-formed or not, written without validation
    "SOPClassUID": st.sampled_from(SOP_CLASSES),
    "StudyInstanceUID": st.one_of(st.just(""), st.just("1.2.3"), TEXT),
    "SeriesInstanceUID": st.one_of(st.just(""), TEXT),
    "SOPInstanceUID": st.one_of(st.just(""), TEXT),
    "Modality": st.sampled_from(["CR", "DX", "CT", "MR", "SR", "", "cr", "XX" * 10]),
    "BodyPartExamined": st.sampled_from(["CHEST", "", "HAND", "chest", "THORAX"]),
    "ViewPosition": st.sampled_from(["PA", "AP", "LL", "", "LATERAL", "pa"]),
    "PatientOrientation": st.one_of(st.lists(st.sampled_from(["L", "F", "R", "H", "A", ""]),
                                             max_size=3), TEXT),
    "ImageType": st.lists(st.sampled_from(["ORIGINAL", "PRIMARY", "LOCALIZER", "", "DERIVED"]),
                          max_size=4),
    "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB",
                                                  "PALETTE COLOR", "YBR_FULL", "", "mono"]),
    "Rows": st.integers(0, 65535), "Columns": st.integers(0, 65535),
    "BitsAllocated": st.sampled_from([0, 1, 8, 12, 16, 32, 64]),
    "BitsStored": st.integers(0, 40), "HighBit": st.integers(0, 40),
    "PixelRepresentation": st.integers(0, 3), "SamplesPerPixel": st.integers(0, 4),
    "NumberOfFrames": NUMBER_TEXT, "InstanceNumber": NUMBER_TEXT, "SeriesNumber": NUMBER_TEXT,
    "RescaleSlope": NUMBER_TEXT, "RescaleIntercept": NUMBER_TEXT,
    "WindowCenter": NUMBER_TEXT, "WindowWidth": NUMBER_TEXT,
    "VOILUTFunction": st.sampled_from(["LINEAR", "LINEAR_EXACT", "SIGMOID", "", "CUBIC"]),
    "PixelSpacing": st.one_of(NUMBER_TEXT, st.lists(NUMBER_TEXT, max_size=3)),
    "ImagerPixelSpacing": st.lists(NUMBER_TEXT, max_size=3),
    "PatientAge": st.one_of(st.sampled_from(["045Y", "003M", "999Y", "12Y", "", "abcd"]), TEXT),
    "PatientBirthDate": st.one_of(st.sampled_from(["19800230", "2030", "", "00000000"]), TEXT),
    "StudyDate": st.one_of(st.sampled_from(["20240101", "2024-01-01", ""]), TEXT),
    "PresentationIntentType": st.sampled_from(["FOR PROCESSING", "FOR PRESENTATION", ""]),
    "SpecificCharacterSet": st.sampled_from(["ISO_IR 100", "ISO_IR 192", "GB18030", "bogus",
                                             "ISO 2022 IR 87", ""]),
    "PatientName": st.sampled_from([FAKE_PATIENT_NAME, FAKE_PATIENT_NAME + "^^^^^^^",
                                    FAKE_PATIENT_NAME + "=" * 5, FAKE_PATIENT_NAME * 4]),
    "PatientID": st.sampled_from([FAKE_PATIENT_ID, FAKE_PATIENT_ID + "\\" + FAKE_PATIENT_ID,
                                  FAKE_PATIENT_ID * 6]),
}
RAW_TAGS = {  # tag -> VR of elements replaced by raw bytes (values of any length or form)
    "Rows": "US", "Columns": "US", "BitsStored": "US", "BitsAllocated": "US",
    "SamplesPerPixel": "US", "PixelRepresentation": "US", "NumberOfFrames": "IS",
    "InstanceNumber": "IS", "RescaleSlope": "DS", "WindowCenter": "DS", "PixelSpacing": "DS",
    "SOPClassUID": "UI", "StudyInstanceUID": "UI", "PatientName": "PN", "PatientID": "LO",
    "PatientAge": "AS", "Modality": "CS", "VOILUTSequence": "SQ", "ModalityLUTSequence": "SQ",
    "PixelData": "OW",
}


def sometimes(probability: float) -> st.SearchStrategy[bool]:
    """True about that often (Hypothesis's own integers lean to the ends of their range)."""
    trues = round(probability * 100)
    return st.sampled_from([True] * trues + [False] * (100 - trues))


def _lut_item(draw) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = draw(st.lists(st.integers(0, 65535), min_size=0, max_size=4))
    item.LUTData = draw(st.lists(st.integers(0, 65535), max_size=8))
    item["LUTDescriptor"].VR = item["LUTData"].VR = "US"
    return item


@st.composite
def radiographs(draw) -> Dataset:
    """A small, valid frontal chest CR carrying the fake patient; uncompressed."""
    rows, columns = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    bits = draw(st.sampled_from([8, 10, 12, 14, 16]))
    dtype = np.uint8 if bits == 8 else np.uint16
    pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(
        0, 1 << bits, size=(rows, columns), dtype=dtype)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ComputedRadiographyImageStorage
    entropy = str(draw(st.integers(0, 2**64)))  # UIDs from drawn data keep generation replayable
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        generate_uid(entropy_srcs=[entropy, level]) for level in ("image", "study", "series"))
    ds.PatientName, ds.PatientID = FAKE_PATIENT_NAME, FAKE_PATIENT_ID
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = pixels.itemsize * 8, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.preamble = b"\0" * 128
    return ds


def _set_raw(ds: Dataset, keyword: str, vr: str, value: bytes) -> None:
    """The element as these bytes, written as they are (pydicom would convert a value)."""
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def _set(ds: Dataset, keyword: str, value) -> None:
    """Text (whether or not its VR allows it) goes in raw; numbers and lists through pydicom."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "\\".join(value)
    if isinstance(value, str):
        encoded = value.encode("latin-1")
        _set_raw(ds, keyword, dictionary_VR(keyword), encoded + b" " * (len(encoded) % 2))
    else:
        setattr(ds, keyword, value)


@st.composite
def mutations(draw):
    """One change to a dataset, as a function applying it."""
    action = draw(st.sampled_from(["remove", "value", "raw", "lut", "encapsulate"]))
    if action == "remove":
        keyword = draw(st.sampled_from(REMOVABLE))
        return lambda ds: delattr(ds, keyword) if keyword in ds else None
    if action == "value":
        keyword = draw(st.sampled_from(sorted(VALUES)))
        value = draw(VALUES[keyword])
        return lambda ds: _set(ds, keyword, value)
    if action == "raw":
        keyword = draw(st.sampled_from(sorted(RAW_TAGS)))
        value = draw(st.binary(max_size=40))
        return lambda ds: _set_raw(ds, keyword, RAW_TAGS[keyword], value)
    if action == "lut":
        sequence = draw(st.sampled_from(["VOILUTSequence", "ModalityLUTSequence"]))
        items = [_lut_item(draw) for _ in range(draw(st.integers(0, 2)))]
        return lambda ds: setattr(ds, sequence, items)
    frames = draw(st.lists(st.binary(min_size=2, max_size=64), min_size=1, max_size=3))

    def encapsulated(ds: Dataset) -> None:  # encapsulated frames: compressed, or noise
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
    return encapsulated


@st.composite
def damaged_datasets(draw) -> Dataset:
    """A radiograph with a few attributes removed, given other values, or replaced by raw bytes."""
    ds = draw(radiographs())
    for mutate in draw(st.lists(mutations(), max_size=4)):
        try:
            mutate(ds)
        except Exception:  # pydicom refused this change (it parses some values to apply it)
            continue
    ds.file_meta.TransferSyntaxUID = draw(st.sampled_from(TRANSFER_SYNTAXES))
    return ds


NATIVE = {(False, True): ExplicitVRLittleEndian, (True, True): ImplicitVRLittleEndian,
          (False, False): ExplicitVRBigEndian}


def encode(ds: Dataset, implicit_vr: bool = False, little_endian: bool = True) -> bytes | None:
    """The Part 10 file of `ds` in the given encoding whatever its transfer syntax says (native
    pixels under a compressed one too); None when pydicom cannot write it at all."""
    declared = str(ds.file_meta.get("TransferSyntaxUID", ""))
    ds.set_original_encoding(implicit_vr, little_endian, "iso8859")
    try:
        return _written(ds, implicit_vr, little_endian)
    except Exception:  # pydicom will not pair this pixel data with this transfer syntax
        pass
    ds.file_meta.TransferSyntaxUID = NATIVE[implicit_vr, little_endian]
    try:
        return _with_transfer_syntax(_written(ds, implicit_vr, little_endian), declared)
    except Exception:
        return None


def _written(ds: Dataset, implicit_vr: bool, little_endian: bool) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=implicit_vr, little_endian=little_endian, force_encoding=True)
    return buffer.getvalue()


def _with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """`data` with the value of (0002,0010) replaced (the file meta is explicit VR little endian
    and written without a group length, so no other length changes)."""
    at = data.index(b"\x02\x00\x10\x00UI")
    length = int.from_bytes(data[at + 6:at + 8], "little")
    value = uid.encode("latin-1")
    value += b"\0" * (len(value) % 2)
    return data[:at + 6] + len(value).to_bytes(2, "little") + value + data[at + 8 + length:]


@st.composite
def dicom_files(draw) -> bytes:
    """A damaged dataset, encoded (explicit or implicit VR, little or big endian)."""
    ds = draw(damaged_datasets())
    implicit, little = draw(st.sampled_from([(False, True), (True, True), (False, False)]))
    return encode(ds, implicit, little) or encode(draw(radiographs()))


@st.composite
def damaged_bytes(draw) -> bytes:
    """A valid file with bytes flipped, inserted, removed or cut off; or noise after a preamble."""
    if draw(sometimes(1 / 10)):
        return draw(st.one_of(st.binary(max_size=600),
                              st.binary(max_size=400).map(lambda b: b"\0" * 128 + b"DICM" + b)))
    data = bytearray(encode(draw(radiographs())))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "length"]))
        if action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif action == "truncate":
            del data[at:]
        else:  # a 16- or 32-bit length field made huge, zero or odd
            data[at:at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0",
                                                    b"\x01\0\0\0", b"\xff\xff\0\0"]))
    return bytes(data)


def dicom_payloads() -> st.SearchStrategy[bytes]:
    return st.one_of(dicom_files(), damaged_bytes())


# --- HTTP requests to the triage route ----------------------------------------------------

@dataclass(frozen=True)
class TriageRequest:
    content_type: str
    body: bytes
    query: str


BOUNDARY = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789'()+_,-./:=?"),
                   min_size=1, max_size=40).filter(lambda b: not b.endswith(" "))
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),  # what HTTP can
                      max_size=40).map(str.strip)  # carry: h11 refuses to send " x " at all
INCLUDE = st.sampled_from(["", "?include=sr", "?include=sc", "?include=sr,sc", "?include=xx",
                           "?include=", "?include=sr,,sc", "?include=%00"])


@st.composite
def multipart_body(draw, form_data: bool) -> tuple[str, bytes]:
    """(boundary, body) of 0-3 parts, each DICOM or noise; the framing itself damaged sometimes."""
    boundary = draw(BOUNDARY)
    parts = []
    for index in range(draw(st.integers(0, 3))):
        payload = draw(st.one_of(dicom_payloads(), st.binary(max_size=64)))
        headers = [b"Content-Type: application/dicom"]
        if form_data:
            headers.insert(0, f'Content-Disposition: form-data; name="file{index}"; '
                              f'filename="{index}.dcm"'.encode())
        if draw(sometimes(1 / 8)):
            headers = [draw(st.binary(max_size=40))]
        parts.append(b"--" + boundary.encode() + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
                     + payload + b"\r\n")
    closing = draw(st.sampled_from([f"--{boundary}--\r\n".encode()] * 6
                                   + [b"", b"--", f"--{boundary}".encode()]))
    body = b"".join(parts) + closing
    if draw(sometimes(1 / 10)):  # a cut or a stray byte inside the framing
        body = body[:draw(st.integers(0, len(body)))] + draw(st.binary(max_size=4))
    return boundary, body


@st.composite
def triage_requests(draw, kind: str) -> TriageRequest:
    query = draw(INCLUDE)
    if kind == "single":
        content_type = draw(st.sampled_from(["application/dicom"] * 24 + [
            "application/octet-stream", "application/dicom; charset=utf-8", "APPLICATION/DICOM",
            "", "text/plain", "image/png", "multipart/related", ";;;", "application/"]))
        if content_type == ";;;":
            content_type = draw(HEADER_TEXT)
        return TriageRequest(content_type, draw(dicom_payloads()), query)
    boundary, body = draw(multipart_body(form_data=kind == "form-data"))
    declared = draw(st.sampled_from([boundary] * 12 + ["", "other-boundary", f'"{boundary}"']))
    media = ('multipart/related; type="application/dicom"' if kind == "related"
             else "multipart/form-data")
    content_type = f"{media}; boundary={declared}" if declared else media
    return TriageRequest(content_type, body, query)


# --- running a campaign --------------------------------------------------------------------

@dataclass
class Tally:
    """What one entry point answered; `failures` are the answers that break the rules."""

    statuses: Counter = field(default_factory=Counter)  # "200"; "part 422" inside a multipart
    codes: Counter = field(default_factory=Counter)  # (status, error code) of each answer
    dropped: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  # a reject without {error, reason}
    server_errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def sent(self) -> int:
        return sum(n for status, n in self.statuses.items()
                   if not status.startswith("part")) + len(self.dropped)

    @property
    def failures(self) -> list[str]:
        return self.server_errors + self.dropped + self.unexplained

    def record(self, what: str, status: int, content_type: str, body: bytes) -> None:
        answer = _json(content_type, body)
        with self._lock:
            self._count(what, status, answer, body)
            for index, part in enumerate(_parts(answer) if status == 200 else []):
                self._count(f"part {index} of {what}", part.get("status"), part, body, "part ")

    def _count(self, what: str, status, answer, body: bytes, prefix: str = "") -> None:
        reject = _reject_code(answer)
        self.statuses[f"{prefix}{status}"] += 1
        self.codes[f"{prefix}{status}", reject or ""] += 1
        if not isinstance(status, int) or status >= 500:
            self.server_errors.append(f"{status} for {what}: {body[:300]!r}")
        elif status >= 400 and reject is None:
            self.unexplained.append(f"{status} for {what}: {body[:300]!r}")

    def drop(self, what: str, error: Exception) -> None:
        with self._lock:
            self.dropped.append(f"{type(error).__name__} for {what}: {error}")


def _json(content_type: str, body: bytes) -> object:
    if "json" not in content_type:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _parts(answer: object) -> list[dict]:
    """The per-instance answers of a multipart triage request."""
    results = answer.get("results") if isinstance(answer, dict) else None
    return [part for part in results if isinstance(part, dict)] if isinstance(results, list) else []


def _reject_code(answer: object) -> str | None:
    """The `error` of a JSON `{error, reason}` answer (with a non-empty reason), else None."""
    if (isinstance(answer, dict) and isinstance(answer.get("error"), str)
            and isinstance(answer.get("reason"), str) and answer["reason"]):
        return answer["error"]
    return None


@contextmanager
def values_unchecked():
    """Let the strategies build datasets whose values break their VR (the point of them), and
    put pydicom's checks back afterwards for the rest of the test session."""
    settings = pydicom_config.settings
    before = settings.writing_validation_mode, settings.reading_validation_mode
    settings.writing_validation_mode = settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        settings.writing_validation_mode, settings.reading_validation_mode = before


def _campaign(strategy: st.SearchStrategy, count: int, seed_value: int, concurrency: int,
              send) -> None:
    """Draw `count` inputs from `strategy` (seeded, no shrinking) and `send` each, up to
    `concurrency` at a time, while the next ones are generated."""
    slots = threading.Semaphore(concurrency * 2)
    sent = []
    with ThreadPoolExecutor(concurrency) as pool:
        def submit(item) -> None:
            slots.acquire()
            sent.append(pool.submit(send, item))
            sent[-1].add_done_callback(lambda _: slots.release())

        @seed(seed_value)
        @settings(max_examples=count, database=None, deadline=None, derandomize=False,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(item=strategy)
        def generate(item) -> None:
            submit(item)

        generate()
    for future in sent:
        future.result()  # a mistake of the harness itself surfaces here


def fuzz_triage(base_url: str, headers: dict, kind: str, count: int, seed_value: int = 0,
                concurrency: int = 2, timeout: float = 120) -> Tally:
    """`count` Hypothesis-generated requests of one kind (`TRIAGE_KINDS`) to the triage route."""
    tally = Tally()
    local = threading.local()

    def send(request: TriageRequest) -> None:
        client = getattr(local, "client", None) or httpx.Client(timeout=timeout)
        local.client = client
        what = f"{kind} {request.content_type!r} ({len(request.body)} bytes)"
        try:
            response = client.post(base_url + TRIAGE + request.query, content=request.body,
                                   headers={**headers, "Content-Type": request.content_type})
        except httpx.TransportError as error:
            tally.drop(what, error)
            return
        tally.record(what, response.status_code, response.headers.get("content-type", ""),
                     response.content)

    with values_unchecked():
        _campaign(triage_requests(kind), count, seed_value, concurrency, send)
    return tally


def openapi_operations(base_url: str):
    """The service's `/v1` operations from its own `/docs.json`, keyed "METHOD /path"; the
    triage route is left to `fuzz_triage`, whose DICOM strategies go deeper."""
    import schemathesis

    schema = schemathesis.openapi.from_url(base_url + "/docs.json")
    operations = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith("/v1/") and operation.path != TRIAGE:
            operations[f"{operation.method.upper()} {operation.path}"] = operation
    return operations


def fuzz_operation(base_url: str, headers: dict, operation, count: int, seed_value: int = 0,
                   concurrency: int = 2, timeout: float = 60,
                   known: dict[str, list[str]] | None = None) -> Tally:
    """`count` Schemathesis cases for one operation, conforming to its schema and not; `known`
    path parameter values that exist (a CDS service id, a stored result) steer some of the
    conforming ones past the 404 that random ids get."""
    from schemathesis import GenerationMode

    tally = Tally()
    local = threading.local()
    names = [name for name in (known or {}) if "{" + name + "}" in operation.path]
    fixed = [dict(zip(names, values)) for values in _combinations([known[n] for n in names])]
    branches = [operation.as_strategy(generation_mode=mode, path_parameters=values)
                for values in ([None] + (fixed if names else []))
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    # an even choice of branch (st.one_of leans towards the first)
    strategy = st.sampled_from(branches).flatmap(lambda branch: branch)

    def send(case) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        what = f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r:.200}"
        try:
            response = case.call(base_url=base_url, session=session, headers=headers,
                                 timeout=timeout)
        except requests.RequestException as error:
            tally.drop(what, error)
            return
        tally.record(what, response.status_code,
                     (response.headers.get("content-type") or [""])[0], response.content)

    _campaign(strategy, count, seed_value, concurrency, send)
    return tally


def known_path_values(base_url: str, headers: dict) -> dict[str, list[str]]:
    """Path parameter values that exist in the started service: the CDS service ids, and the
    result of one radiograph triaged now."""
    from clinassist.serving.medication.cds import SERVICES

    from dicom_fixtures import synthetic_cr, to_bytes

    instance = to_bytes(synthetic_cr(PatientName=FAKE_PATIENT_NAME, PatientID=FAKE_PATIENT_ID))
    answer = httpx.post(base_url + TRIAGE, content=instance, timeout=120,
                        headers={**headers, "Content-Type": "application/dicom"})
    answer.raise_for_status()
    return {"service_id": sorted(SERVICES), "result_id": [answer.json()["id"]],
            "kind": ["sr", "sc", "json"]}


def _combinations(choices: list[list[str]]) -> list[tuple[str, ...]]:
    from itertools import product

    return list(product(*choices))


def leaked_identifiers(log_text: str) -> list[str]:
    """The log lines that hold the fake patient's name or ID (in any of their parts)."""
    family, given_name = FAKE_PATIENT_NAME.split("^")
    markers = (FAKE_PATIENT_ID, family, given_name, FAKE_PATIENT_ID.replace("-", ""))
    return [line for line in log_text.splitlines()
            if any(marker.lower() in line.lower() for marker in markers)]


def is_ready(base_url: str) -> bool:
    try:
        return httpx.get(base_url + "/readyz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


