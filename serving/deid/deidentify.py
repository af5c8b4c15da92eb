"""De-identify one DICOM instance: PS3.15 Annex E Basic Application Level Confidentiality Profile
with the Retain Longitudinal Temporal Information with Modified Dates and Clean Descriptors options.

Every attribute present (at any depth) gets the action of its row in Table E.1-1 (`profile`);
the actions are handed to pydicom's `deid` as a recipe and carried out by its `DicomParser`,
which also removes private attributes. What is keyed by the site key (`site.key`, HMAC-SHA-256):
- the pseudonym that replaces Patient ID and Patient's Name (`pseudonymise`, as in the audit
  trail), so the same patient gets the same pseudonym every time;
- every new UID (`2.25.` + 128 bits of the HMAC of the old one), so instances of a study and a
  series stay grouped, across runs too;
- the date shift: a whole number of days (1 to 3650, backwards) per patient, so intervals
  between a patient's studies are kept (times are unchanged by a whole-day shift).
None of this can be reversed without the key. Instances that declare burned-in annotation are
refused unless pixel regions to blank are given (Clean Pixel Data option, done by deid too).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from clinassist.serving.deid.errors import DeidError
from clinassist.serving.deid.profile import DEFAULT_OPTIONS, Action, Option, Profile, load_profile
from clinassist.serving.security.site_key import pseudonymise

MAX_SHIFT_DAYS = 3650
DUMMY_TEXT = "DEIDENTIFIED"
DUMMY_VALUES: dict[str, object] = {
    "AE": DUMMY_TEXT, "AS": "000Y", "CS": DUMMY_TEXT, "DA": "19000101", "DS": "0",
    "DT": "19000101000000", "IS": "0", "LO": DUMMY_TEXT, "LT": DUMMY_TEXT, "PN": DUMMY_TEXT,
    "SH": DUMMY_TEXT, "ST": DUMMY_TEXT, "TM": "000000", "UC": DUMMY_TEXT, "UR": "",
    "UT": DUMMY_TEXT, "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0,
}
TEXT_VRS = ("LO", "LT", "SH", "ST", "UC", "UT", "PN", "CS")
DATE_VRS = ("DA", "DT")
RETAINED = "retained"  # not in Table E.1-1: the profile keeps it
PATIENT_KEYWORDS = ("PatientID", "PatientName")  # Z, filled with the pseudonym (a dummy, E.1.1)
ELEMENT_SEPARATOR = re.compile(r"[\\^=]")


@dataclass(frozen=True)
class Region:
    """A rectangle of pixels to blank: columns `left` to `right`, rows `top` to `bottom`
    (right and bottom exclusive)."""

    left: int
    top: int
    right: int
    bottom: int

    @classmethod
    def parse(cls, text: str) -> Region:
        try:
            left, top, right, bottom = (int(part) for part in text.split(","))
        except ValueError:
            raise DeidError(f"a pixel region is LEFT,TOP,RIGHT,BOTTOM in pixels, e.g. "
                            f"0,0,400,120; got {text!r}") from None
        if not (0 <= left < right and 0 <= top < bottom):
            raise DeidError(f"pixel region {text!r} is empty or negative; give "
                            "LEFT,TOP,RIGHT,BOTTOM with LEFT < RIGHT and TOP < BOTTOM")
        return cls(left, top, right, bottom)


@dataclass(frozen=True)
class AttributeAction:
    """What happened to one attribute: `path` locates it (sequence items by index), `table` is its
    entry in Table E.1-1 ("" when not listed), `action` the code applied or "retained"."""

    path: str
    tag: str  # (GGGG,EEEE)
    keyword: str
    vr: str
    table: str
    action: str


@dataclass
class Deidentified:
    dataset: Dataset
    pseudonym: str
    actions: list[AttributeAction] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many attributes received each action."""
        return dict(sorted(Counter(action.action for action in self.actions).items()))


class Deidentifier:
    """Applies the profile with `options`, keyed by the site `key`."""

    def __init__(self, key: bytes, options: Sequence[Option] = DEFAULT_OPTIONS,
                 clean_regions: Sequence[Region] = (), profile: Profile | None = None) -> None:
        self.key, self.options = key, tuple(options)
        self.clean_regions = tuple(clean_regions)
        self.profile = profile or load_profile()

    def new_uid(self, uid: str) -> str:
        """The UID that replaces `uid`: the same for the same key, unrelated without it."""
        digest = hmac.new(self.key, f"uid:{uid}".encode(), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def date_shift_days(self, patient_id: str) -> int:
        digest = hmac.new(self.key, f"date-shift:{patient_id}".encode(), hashlib.sha256).digest()
        return -(1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS)

    def deidentify(self, source: Dataset) -> Deidentified:
        """A de-identified copy of `source` and the action taken on each attribute present."""
        patient_id = str(source.get("PatientID") or "").strip()
        if not patient_id:
            raise DeidError("the instance has no Patient ID, so it cannot get a keyed pseudonym "
                            "linking it to the patient's other studies; fill Patient ID at the "
                            "PACS and export it again")
        burned_in = str(source.get("BurnedInAnnotation") or "").strip().upper() == "YES"
        if burned_in and not self.clean_regions:
            raise DeidError("the instance declares burned-in annotation (Burned In Annotation = "
                            "YES), which the header profile cannot remove; give the regions to "
                            "blank with --clean-pixels LEFT,TOP,RIGHT,BOTTOM (Clean Pixel Data "
                            "option), or leave the instance out")
        dataset = copy.deepcopy(source)
        pseudonym = pseudonymise(patient_id, self.key)
        actions = list(self._plan(dataset))
        identifying = _identifying_values(dataset, actions)
        self._run_deid(dataset, actions, pseudonym, self.date_shift_days(patient_id), identifying)
        method_codes = [codes.DCM.BasicApplicationConfidentialityProfile,
                        *(option.code for option in self.options)]
        if burned_in:
            _blank_regions(dataset, self.clean_regions)
            dataset.BurnedInAnnotation = "NO"
            method_codes.append(codes.DCM.CleanPixelDataOption)
        _mark_deidentified(dataset, method_codes)
        return Deidentified(dataset, pseudonym, actions)

    def _plan(self, dataset: Dataset, prefix: str = "") -> Iterator[AttributeAction]:
        """The action of every attribute present; a removed or emptied sequence is not entered."""
        for element in dataset:
            tag = _tag_text(element)
            path = prefix + tag
            rule = self.profile.rule(element.tag)
            action = rule.action(self.options).value if rule else RETAINED
            yield AttributeAction(path, tag, element.keyword or "private", element.VR,
                                  rule.basic if rule else "", action)
            if element.VR == "SQ" and action not in (Action.REMOVE, Action.EMPTY):
                for index, item in enumerate(element.value):
                    yield from self._plan(item, f"{path}[{index}]")

    def _run_deid(self, dataset: Dataset, actions: list[AttributeAction], pseudonym: str,
                  shift_days: int, identifying: set[str]) -> None:
        from deid.dicom.parser import DicomParser
        from deid.logger import bot

        bot.level = -5  # deid logs field names and file names; nothing of it belongs in our logs
        lines = ["FORMAT dicom", "", "%header", ""]
        for keyword in PATIENT_KEYWORDS:
            lines.append(f"REPLACE {keyword} var:pseudonym")
        seen: set[str] = set()
        for action in actions:
            if action.keyword in (*PATIENT_KEYWORDS, "private") or action.action == RETAINED:
                continue
            line = _recipe_line(action.tag, action.action, action.vr)
            if line and line not in seen:
                seen.add(line)
                lines.append(line)
        with tempfile.TemporaryDirectory() as folder:
            recipe = Path(folder) / "deid.dicom"
            recipe.write_text("\n".join(lines) + "\n")
            parser = DicomParser(dataset, recipe=str(recipe))
            parser.define("pseudonym", pseudonym)
            parser.define("date_shift", shift_days)
            parser.define("new_uid", lambda field, **_: _map_values(field.element, self.new_uid))
            parser.define("dummy", lambda field, **_: DUMMY_VALUES.get(field.element.VR, ""))
            parser.define("clean", lambda field, **_: _map_values(
                field.element, lambda text: _clean_text(text, identifying)))
            with _no_value_validation():
                parser.parse(remove_private=True)
        if "SOPInstanceUID" in dataset and hasattr(dataset, "file_meta"):
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID


def _tag_text(element: DataElement) -> str:
    return f"({element.tag.group:04X},{element.tag.element:04X})"


def _recipe_line(tag: str, action: str, vr: str) -> str | None:
    """The deid recipe line carrying out a Table E.1-1 action on `tag`; None keeps it."""
    if action == Action.REMOVE:
        return f"REMOVE {tag}"
    if action == Action.EMPTY:
        return f"BLANK {tag}"
    if action == Action.DUMMY and vr != "SQ":
        return f"REPLACE {tag} func:dummy"
    if action == Action.NEW_UID and vr == "UI":
        return f"REPLACE {tag} func:new_uid"
    if action == Action.CLEAN and vr in DATE_VRS:
        return f"JITTER {tag} var:date_shift"
    if action == Action.CLEAN and vr in TEXT_VRS:
        return f"REPLACE {tag} func:clean"
    return None  # K; C of a time (a whole-day shift keeps it) or of a sequence (its items are
    # de-identified attribute by attribute); U* and D of a sequence likewise


def _map_values(element: DataElement, change) -> object:
    """`change` applied to each value of a (possibly multi-valued) string element."""
    value = element.value
    if value in (None, ""):
        return value
    if isinstance(value, (list, MultiValue)):
        return "\\".join(change(str(v)) for v in value)
    return change(str(value))


def _identifying_values(dataset: Dataset, actions: list[AttributeAction]) -> set[str]:
    """The text values the profile removes or replaces (names, IDs, places), each name component
    on its own: what Clean Descriptors must not let through in free text."""
    values: set[str] = set()
    removed = {a.tag for a in actions
               if a.action in (Action.REMOVE, Action.EMPTY, Action.DUMMY, Action.NEW_UID)
               and a.vr in (*TEXT_VRS, *DATE_VRS, "UI", "AE")}
    for element in dataset.iterall():
        if _tag_text(element) in removed and element.value not in (None, ""):
            for part in ELEMENT_SEPARATOR.split(str(element.value)):
                if len(part.strip()) >= 3:
                    values.add(part.strip())
    return values


def _clean_text(text: str, identifying: set[str]) -> str:
    """`text` with every identifying value in it replaced by '*' (case-insensitive)."""
    for value in sorted(identifying, key=len, reverse=True):
        text = re.sub(re.escape(value), "*", text, flags=re.IGNORECASE)
    return text


def _blank_regions(dataset: Dataset, regions: Sequence[Region]) -> None:
    """Zero the given pixel regions with deid's cleaner, writing the pixels uncompressed."""
    from deid.dicom.pixels.clean import clean_pixel_data

    results = {"results": [{"coordinates": [
        [0, f"{r.left},{r.top},{r.right},{r.bottom}"] for r in regions]}]}
    cleaned = clean_pixel_data(dicom_file=dataset, results=results)
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        dataset.decompress(generate_instance_uid=False)  # keep the keyed UID it was given
    dataset.PixelData = cleaned.astype(dataset.pixel_array.dtype).tobytes()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _mark_deidentified(dataset: Dataset, method_codes: list) -> None:
    """PS3.15 E.1.1: say that identity was removed, how, and that dates were modified."""
    dataset.PatientIdentityRemoved = "YES"
    dataset.LongitudinalTemporalInformationModified = "MODIFIED"
    dataset.DeidentificationMethod = "clinassist deid: DCM " + \
        ", ".join(code.value for code in method_codes)
    items = []
    for code in method_codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator = code.value, code.scheme_designator
        item.CodeMeaning = code.meaning
        items.append(item)
    dataset.DeidentificationMethodCodeSequence = items


class _no_value_validation:
    """deid writes values pydicom would warn about (e.g. a UID list as one string); they are
    valid DICOM once encoded."""

    def __enter__(self) -> None:
        self._mode = pydicom_config.settings.writing_validation_mode
        pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE

    def __exit__(self, *exc) -> None:
        pydicom_config.settings.writing_validation_mode = self._mode
