"""The patient context the checks and the risk score use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Patient:
    age: int | None = None
    sex: str | None = None
    egfr: float | None = None  # mL/min/1.73 m2
    allergies: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    previous_adr: bool | None = None  # a previous adverse drug reaction; None = not stated
