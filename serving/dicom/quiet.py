"""Keep patient identifiers out of what pydicom and highdicom print."""

from __future__ import annotations

import logging
import warnings

from pydicom import config as pydicom_config


def keep_identifiers_out_of_logs() -> None:
    """pydicom's value checks and highdicom's warnings quote the values they find (a malformed
    Patient's Name, whole headers read as a UID) and its INFO lines name instance UIDs; the
    service reads headers as they come and never logs a value, so both are kept quiet."""
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    warnings.filterwarnings("ignore", category=UserWarning, module="highdicom")
    logging.getLogger("highdicom").setLevel(logging.ERROR)  # its WARNINGs quote patient names


def read_standard_tables() -> None:
    """highdicom parses its tables of the DICOM standard (a 22 MB JSON file) when it writes its
    first SR or Secondary Capture, in one call that holds the GIL for a second or more (several
    on a loaded machine). Parsed at a process's start, they hold up no request."""
    from highdicom._standard_utils import (get_iod_module_map, get_module_attribute_map,
                                           get_sop_class_iod_map)

    for table in (get_sop_class_iod_map, get_iod_module_map, get_module_attribute_map):
        table()
