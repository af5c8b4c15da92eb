"""Run Orthanc (Debian packages) with the shipped configuration on loopback ports of our
choosing and its own storage: for the integration test, the benchmark and trying it out."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from clinassist.errors import ClinassistError
from clinassist.processes import stop_group

FOLDER = Path(__file__).resolve().parent
START_TIMEOUT_S = 30


@dataclass
class LocalOrthanc:
    folder: Path
    http_port: int
    dicom_port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        """The REST root; DICOMweb is under /dicom-web."""
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        stop_group(self.process)

    def restart(self) -> None:
        """Stop Orthanc and start it again on the same storage and ports."""
        self.stop()
        self.process = _run(self.folder, self.url)


def start(folder: Path, http_port: int, dicom_port: int, gateway_port: int | None) -> LocalOrthanc:
    """Orthanc storing under `folder`, routing chest radiographs to a gateway on
    `gateway_port` (None: a plain Orthanc, routing nothing)."""
    config = json.loads((FOLDER / "orthanc.json").read_text())
    config.update(StorageDirectory=str(folder / "db"), IndexDirectory=str(folder / "db"),
                  HttpPort=http_port, DicomPort=dicom_port)
    if gateway_port is None:
        config.update(LuaScripts=[], DicomModalities={})
    else:
        config.update(LuaScripts=[str(FOLDER / "route-to-clinassist.lua")],
                      DicomModalities={"clinassist": ["CLINASSIST", "127.0.0.1", gateway_port]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "orthanc.json").write_text(json.dumps(config))
    return LocalOrthanc(folder, http_port, dicom_port,
                        _run(folder, f"http://127.0.0.1:{http_port}"))


def _run(folder: Path, url: str) -> subprocess.Popen:
    """Orthanc with `folder`'s configuration, once its REST API answers."""
    with open(folder / "orthanc.log", "a") as log:
        process = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        if _answers(url + "/system"):
            return process
        time.sleep(0.2)
    if process.poll() is None:
        stop_group(process)
    raise ClinassistError(f"Orthanc did not start in {START_TIMEOUT_S} s; see "
                          f"{folder / 'orthanc.log'}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
