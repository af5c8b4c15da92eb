"""DICOM PS3.15 Annex E, Table E.1-1 (Application Level Confidentiality Profile Attributes) as data.

Nothing here lists attributes by hand. Two machine-readable copies of the table are joined:
- the Basic Profile's action of every attribute, from the 2026c edition as shipped by Kitware's
  `dicom-anonymizer` (BSD): 655 attributes;
- the option columns, from the 2020 edition as parsed by Innolitics' `dicom-standard` (MIT), the
  newest machine-readable copy that has them (433 attributes, and the row for private
  attributes). An attribute added to the table since 2020 gets the Basic Profile's action, which
  is the stricter one.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from pydicom.sr.codedict import Code, codes
from pydicom.datadict import keyword_for_tag
from pydicom.tag import BaseTag

from clinassist.serving.deid.errors import DeidError

TABLE_FILE = "confidentiality_profile_attributes.json"
PRIVATE_ROW_ID = "ggggeeee-where-gggg-is-odd"


class Action(StrEnum):
    """The action codes of Table E.1-1 (PS3.15 E.1.1, "Key")."""

    REMOVE = "X"
    EMPTY = "Z"  # zero length (or a dummy value consistent with the VR)
    DUMMY = "D"  # a non-zero length dummy value consistent with the VR
    NEW_UID = "U"  # a non-zero length UID, consistent within the set of instances
    KEEP = "K"
    CLEAN = "C"  # a value of similar meaning known not to identify the patient


class Option(StrEnum):
    """The profile options of PS3.15 E.3 this project applies, named by their column in the table;
    `code` is the option's CID 7050 concept (PS3.16), for De-identification Method Code Sequence."""

    CLEAN_DESCRIPTORS = "cleanDescOpt"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "rtnLongModifDatesOpt"

    @property
    def code(self) -> Code:
        return {Option.CLEAN_DESCRIPTORS: codes.DCM.CleanDescriptorsOption,
                Option.RETAIN_LONGITUDINAL_MODIFIED_DATES:
                    codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption}[self]


DEFAULT_OPTIONS = (Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS)


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1: `pattern` is 8 hex digits with `x` for any digit (e.g. 60xx3000)."""

    pattern: str
    name: str
    basic: str  # as printed in the table: "X", "X/Z", "X/Z/U*", ...
    options: dict[str, str] = field(default_factory=dict)

    def action(self, selected: Collection[Option]) -> Action:
        """The action for this attribute under the Basic Profile with the `selected` options.

        An option's entry replaces the Basic Profile's. Where the table leaves a choice
        ("X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*": which one depends on the attribute's Type in the
        IOD), the least destructive is taken, since it is valid whatever the Type: a dummy for
        Type 1, empty for Type 2, new UIDs inside a sequence of references (U*)."""
        for option in selected:
            if code := self.options.get(option.value):
                return Action(code)
        choices = self.basic.replace("*", "").split("/")
        return next(Action(code) for code in "UDZX" if code in choices)

    def matches(self, tag: int) -> bool:
        digits = f"{tag:08x}"
        return all(p in ("x", d) for p, d in zip(self.pattern, digits))


class Profile:
    """Table E.1-1, looked up by tag; private attributes (odd groups) have their own row."""

    def __init__(self, rules: list[Rule], private: Rule) -> None:
        self.rules = rules
        self.private = private
        self._exact = {rule.pattern: rule for rule in rules if "x" not in rule.pattern}
        self._repeating = [rule for rule in rules if "x" in rule.pattern]

    def rule(self, tag: BaseTag) -> Rule | None:
        """The row for `tag`, or None when the table does not list it (the profile keeps it)."""
        if tag.is_private:
            return self.private
        exact = self._exact.get(f"{int(tag):08x}")
        if exact is not None:
            return exact
        return next((rule for rule in self._repeating if rule.matches(int(tag))), None)


BASIC_EDITION = "dicomfields_2026c"
BASIC_GROUPS = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
                "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D",
                "X_Z_U_STAR_TAGS": "X/Z/U*"}


@cache
def load_profile() -> Profile:
    """Table E.1-1: the Basic Profile of 2026c with the option columns of 2020."""
    option_rows = {row["id"].lower(): row for row in _option_table()}
    rules = []
    for pattern, basic in _basic_table():
        row = option_rows.get(pattern, {})
        options = {key: value for key, value in row.items()
                   if key not in ("name", "tag", "id", "stdCompIOD", "basicProfile")}
        rules.append(Rule(pattern, _name(pattern), basic, options))
    private = option_rows[PRIVATE_ROW_ID]
    return Profile(rules, Rule("ggggeeee", private["name"], private["basicProfile"],
                               {"rtnSafePrivOpt": private["rtnSafePrivOpt"]}))


def _basic_table() -> list[tuple[str, str]]:
    """(pattern, Basic Profile action) of every attribute, from dicom-anonymizer."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    groups = dicom_anonymization_database_selector(BASIC_EDITION)
    return [(_pattern(tag), basic) for group, basic in BASIC_GROUPS.items()
            for tag in groups[group]]


def _pattern(tag: tuple[int, ...]) -> str:
    """(group, element) or (group, element, group mask, element mask) as 8 hex digits, with x
    where the mask leaves a digit free (e.g. 60xx3000)."""
    group, element, *masks = tag
    value, mask = (group << 16) | element, ((masks[0] << 16) | masks[1]) if masks else 0xFFFFFFFF
    return "".join(f"{value:08x}"[i] if (mask >> (28 - 4 * i)) & 0xF else "x" for i in range(8))


def _name(pattern: str) -> str:
    if "x" in pattern:
        return pattern
    tag = int(pattern, 16)
    return keyword_for_tag(tag) or pattern


def _option_table() -> list[dict]:
    """The rows of Table E.1-1 (2020) with their option columns, from dicom-standard."""
    try:
        package = distribution("dicom-standard")
    except PackageNotFoundError:
        raise DeidError("the PS3.15 option columns come from the dicom-standard package; "
                        "install it: pip install 'clinassist[serve]'") from None
    path = next((package.locate_file(f) for f in package.files or () if f.name == TABLE_FILE),
                None)
    if path is None:
        raise DeidError(f"dicom-standard {package.version} has no {TABLE_FILE}; reinstall it")
    return json.loads(Path(str(path)).read_text())
