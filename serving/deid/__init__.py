"""De-identification of DICOM instances (PS3.15 Annex E) before they leave the site."""

from clinassist.serving.deid.deidentify import (AttributeAction, Deidentified, Deidentifier,
                                                Region)
from clinassist.serving.deid.errors import DeidError
from clinassist.serving.deid.profile import DEFAULT_OPTIONS, Action, Option, load_profile

__all__ = ["DEFAULT_OPTIONS", "Action", "AttributeAction", "DeidError", "Deidentified",
           "Deidentifier", "Option", "Region", "load_profile"]
