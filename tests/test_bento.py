"""The Bento (bentofile.yaml, built by deploy/build_bento.py), built offline into a temporary
BENTOML_HOME and served from the built Bento, never from the checkout (working directories outside
it; clinassist imported from the Bento's copy): once with `bentoml serve`, once as deploy/ runs it
(triage-model alone, the API calling it over HTTP, the gateway sharing the API's home), each
process started with its manifest's arguments and environment. Every server is stopped by
signalling it alone, and must take all its processes with it."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pydicom
import pytest
from packaging.requirements import Requirement

import deploy_manifests
from clinassist.bundle import file_sha256, read_metadata
from clinassist.config import data_dir
from clinassist.serving.imaging.model_registry import MODEL_STORE_ENV
from dicom_fixtures import real_cr
from service_process import free_port
from test_gateway_support import SUCCESS, echo, send, wait_for

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "deploy" / "build_bento.py"
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
TRIAGE = "/v1/imaging/triage"
# Besides its source and the bundles a Bento holds BentoML's few kB of metadata; more than this
# means something that is not served (data, plots, a virtual environment) got in.
OVERHEAD_MAX_BYTES = 2 * 1024 * 1024
SAME_MODEL_BOUND = 1e-5  # |p(gateway, in-process) - p(API -> triage-model)|, the same ONNX files
# Package data that the Bento leaves out on purpose (bentofile.yaml `exclude`).
NOT_SERVED = {"clinassist.serving.gateway.orthanc"}


@dataclass(frozen=True)
class Bento:
    tag: str
    path: Path
    bentoml_home: Path
    build_seconds: float

    @property
    def src(self) -> Path:
        return self.path / "src"

    def files(self) -> set[str]:
        return {str(f.relative_to(self.path)) for f in self.path.rglob("*")}


def offline(bentoml_home: Path, **variables: str) -> dict[str, str]:
    """The environment of a BentoML command here: no usage tracking, this test's BentoML home,
    and no bytecode written into the stored Bento."""
    return {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "BENTOML_HOME": str(bentoml_home),
            "PYTHONDONTWRITEBYTECODE": "1", **variables}


@pytest.fixture(scope="module")
def bento(tmp_path_factory) -> Bento:
    bentoml_home = tmp_path_factory.mktemp("bentoml_home")
    started = time.monotonic()
    built = subprocess.run([sys.executable, str(BUILD_SCRIPT)], capture_output=True, text=True,
                           cwd=bentoml_home, env=offline(bentoml_home))
    build_seconds = time.monotonic() - started
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    tag = built.stdout.split()[-1]
    where = subprocess.run([sys.executable, "-m", "bentoml", "get", tag, "-o", "path"],
                           capture_output=True, text=True, cwd=bentoml_home,
                           env=offline(bentoml_home), check=True)
    # BentoML's console folds a path longer than the terminal's width onto several lines.
    return Bento(tag, Path("".join(where.stdout.split())), bentoml_home, build_seconds)


class Server:
    """A server started in a session of its own, logging to a file. BentoML's workers start
    sessions of their own too, so no process group holds them: `stop` signals the server
    alone, which stops its workers, and reports whatever outlived it."""

    def __init__(self, name: str, command: list[str], cwd: Path, env: dict, logs: Path) -> None:
        self.name, self.log = name, logs / f"{name}.log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until(self, condition, what: str) -> None:
        wait_for(lambda: self.process.poll() is not None or condition(), START_TIMEOUT_S, what)
        assert self.process.poll() is None, f"{self.name} exited: {self.log_tail()}"

    def workers(self) -> list[psutil.Process]:
        """The server's service workers (BentoML's processes; not what those start)."""
        return psutil.Process(self.process.pid).children()

    def family(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> list[str]:
        """SIGTERM the server, wait for it and its workers; those that had to be killed."""
        if self.process.poll() is not None:
            return []
        family = self.family()
        self.process.send_signal(signal.SIGTERM)
        killed = []
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            killed.append(f"{self.name} (pid {self.process.pid})")
        _, alive = psutil.wait_procs(family, timeout=STOP_TIMEOUT_S)
        for process in alive:
            process.kill()
        return killed + [f"{self.name}'s process {process.pid}" for process in alive]

    def log_tail(self) -> str:
        return self.log.read_text()[-3000:]


@pytest.fixture
def servers():
    """The servers a test starts; any the test did not stop are stopped here."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def add_user(bento: Bento, home: Path, role: str = "radiologist") -> str:
    """An API key from the Bento's own CLI (`python -m clinassist` run in the Bento's src)."""
    added = subprocess.run([sys.executable, "-m", "clinassist", "users", "add", "--name",
                            f"bento-{role}", "--role", role], capture_output=True, text=True,
                           cwd=bento.src, env=offline(bento.bentoml_home,
                                                      CLINASSIST_HOME=str(home)), check=True)
    return next(line for line in added.stdout.splitlines() if line.startswith("ca_"))


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def triage(url: str, key: str) -> dict:
    response = httpx.post(url + TRIAGE, content=real_cr(), timeout=120,
                          headers={"Authorization": f"Bearer {key}",
                                   "Content-Type": "application/dicom"})
    assert response.status_code == 200, response.text
    return response.json()


def assert_scored_by_the_committed_bundle(answer: dict) -> None:
    _, meta = read_metadata(ROOT / "models" / "cxr_pneumonia")
    assert answer["qc"]["passed"], answer["qc"]
    assert answer["model"] == {"name": meta["name"], "version": meta["version"]}
    assert 0.0 < answer["probability"] < 1.0 and answer["flag"] in ("urgent", "routine")


def test_the_bento_holds_the_services_the_bundles_and_nothing_for_training(bento):
    src = bento.src
    assert (src / "clinassist" / "serving" / "service.py").is_file()
    assert not (src / "clinassist" / "training").exists()
    assert not list(src.rglob("__pycache__"))

    bundle_bytes = 0
    for folder in sorted((ROOT / "models").iterdir()):
        path, meta = read_metadata(src / "models" / folder.name)
        assert file_sha256(path / meta["model_file"]) == meta["sha256"], folder.name
        bundle_bytes += sum(f.stat().st_size for f in path.iterdir())
    total_bytes = sum(f.stat().st_size for f in bento.path.rglob("*") if f.is_file())
    assert total_bytes - bundle_bytes <= OVERHEAD_MAX_BYTES

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package, patterns in pyproject["tool"]["setuptools"]["package-data"].items():
        if package.startswith("clinassist.serving") and package not in NOT_SERVED:
            for pattern in patterns:
                files = list((ROOT / package.replace(".", "/")).glob(pattern))
                assert files, f"{package}: nothing matches {pattern}"
                for file in files:
                    assert (src / file.relative_to(ROOT)).is_file(), file.relative_to(ROOT)

    project = pyproject["project"]
    declared = [str(Requirement(r)) for r in project["dependencies"]
                + project["optional-dependencies"]["serve"]]
    requirements = bento.path / "env" / "python" / "requirements.txt"
    lines = [line for line in requirements.read_text().splitlines() if line.strip()]
    packaged = [str(Requirement(line)) for line in lines if not line.startswith("bentoml==")]
    assert packaged == declared  # the Bento installs what pyproject.toml says serving needs
    assert not {"torch", "monai", "transformers", "accelerate"} & {
        Requirement(line).name for line in lines}
    print(f"\nbentoml build {bento.build_seconds:.1f} s, Bento {total_bytes / 2**20:.1f} MiB")


def test_bentoml_serve_from_the_bento_triages_the_real_cr(bento, servers, tmp_path):
    contents = bento.files()
    home = tmp_path / "home"
    key = add_user(bento, home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Server("bentoml-serve", [sys.executable, "-m", "bentoml", "serve", bento.tag,
                                      "--host", "127.0.0.1", "--port", str(port)],
                    cwd=tmp_path, env=offline(bento.bentoml_home, CLINASSIST_HOME=str(home)),
                    logs=tmp_path)
    servers.append(server)
    server.wait_until(lambda: ready(url), "/readyz of the served Bento")
    workers = server.workers()
    assert len(workers) == 2  # the clinassist and triage-model services
    # each imports the services from the Bento: its working directory is the Bento's src
    assert all(w.cwd() == str(bento.src) and bento.tag in w.cmdline() for w in workers)

    answer = triage(url, key)
    assert_scored_by_the_committed_bundle(answer)
    sr = httpx.get(url + answer["objects"]["sr"], timeout=30,
                   headers={"Authorization": f"Bearer {key}"})
    assert sr.status_code == 200
    source = pydicom.dcmread(io.BytesIO(real_cr()), stop_before_pixels=True)
    report = pydicom.dcmread(io.BytesIO(sr.content))
    assert report.Modality == "SR" and report.StudyInstanceUID == source.StudyInstanceUID
    print(f"\nBento answer ({answer['model']['name']} {answer['model']['version']}): "
          f"probability {answer['probability']:.4f}, flag {answer['flag']}, "
          f"threshold {answer['threshold']}, {answer['timings_ms']['total']:.0f} ms")

    assert server.stop() == [], server.log_tail()
    assert server.process.returncode == 0 and not listening(port)
    assert bento.files() == contents  # state went to CLINASSIST_HOME, nothing into the Bento


def local_args(args: list[str], port: int, depends: dict[str, str]) -> list[str]:
    """A manifest's arguments on loopback: this port, and the dependencies' local URLs."""
    local = list(args)
    for i, arg in enumerate(args[:-1]):
        if arg == "--host":
            local[i + 1] = "127.0.0.1"
        elif arg == "--port":
            local[i + 1] = str(port)
        elif arg == "--depends":
            name = args[i + 1].split("=", 1)[0]
            local[i + 1] = f"{name}={depends[name]}"
    return local


def container_env(manifests, workload: str, bento: Bento, home: Path) -> dict[str, str]:
    """The workload's variables, with the volumes' paths in the container replaced by ours."""
    variables = manifests.environment(workload)
    local = {"CLINASSIST_HOME": str(home), "CLINASSIST_DATA": str(data_dir()),
             MODEL_STORE_ENV: str(home / "model-store")}
    return offline(bento.bentoml_home, **{name: local.get(name, value)
                                         for name, value in variables.items()})


def start_bento_service(manifests, workload: str, bento: Bento, home: Path, logs: Path,
                        port: int, depends: dict[str, str] | None = None) -> Server:
    """The container's command as the image's entrypoint runs `start-http-server ...`."""
    args = local_args(manifests.container(workload)["args"], port, depends or {})
    return Server(workload, [sys.executable, "-m", "bentoml_cli._internal.start", *args,
                             str(bento.path)], cwd=logs,
                  env=container_env(manifests, workload, bento, home), logs=logs)


def test_the_deploy_manifests_run_from_the_bento(bento, servers, tmp_path):
    manifests = deploy_manifests.load()
    entrypoint = (bento.path / "env" / "docker" / "entrypoint.sh").read_text()
    assert 'python -m bentoml_cli._internal.start "${@:1}" "$BENTO_PATH"' in entrypoint

    contents = bento.files()
    home = tmp_path / "home"
    key = add_user(bento, home)
    settings = json.loads(manifests.get("ConfigMap", "clinassist-gateway")["data"]["gateway.json"])
    settings.update(host="127.0.0.1", port=free_port(), destinations=[])  # no PACS here
    (home / "gateway.json").write_text(json.dumps(settings))
    calling, called = settings["allowed_calling_ae_titles"][0], settings["ae_title"]

    model_port, api_port = free_port(), free_port()
    model = start_bento_service(manifests, "triage-model", bento, home, tmp_path, model_port)
    api = start_bento_service(manifests, "clinassist", bento, home, tmp_path, api_port,
                              depends={"triage-model": f"http://127.0.0.1:{model_port}"})
    gateway_args = manifests.container("clinassist-gateway")["args"]
    assert gateway_args[0] == "python"
    gateway = Server("clinassist-gateway", [sys.executable, *gateway_args[1:]], cwd=bento.src,
                     env=container_env(manifests, "clinassist-gateway", bento, home),
                     logs=tmp_path)
    servers.extend([model, api, gateway])
    model.wait_until(lambda: ready(f"http://127.0.0.1:{model_port}"), "triage-model /readyz")
    api_url = f"http://127.0.0.1:{api_port}"
    api.wait_until(lambda: ready(api_url), "the API's /readyz")
    gateway.wait_until(lambda: echo(settings["port"], calling, called) == SUCCESS,
                       "the gateway to answer C-ECHO")
    with socket.create_connection(("127.0.0.1", settings["port"])):
        pass  # what the gateway's tcpSocket probes do; the SCP must carry on
    assert echo(settings["port"], calling, called) == SUCCESS

    answer = triage(api_url, key)
    assert_scored_by_the_committed_bundle(answer)
    assert "path=/infer" in model.log.read_text()  # scored by the separate model service

    instance = pydicom.dcmread(io.BytesIO(real_cr()))
    assert send(settings["port"], [instance], calling, called) == [SUCCESS]
    headers = {"Authorization": f"Bearer {key}"}

    def listed() -> dict | None:
        studies = httpx.get(api_url + "/v1/worklist", headers=headers, timeout=30).json()
        return next((s for s in studies["studies"]
                     if s["study_instance_uid"] == instance.StudyInstanceUID), None)

    entry = wait_for(listed, 60, "the gateway's study on the API's worklist")
    assert entry["priority"] == answer["flag"]
    assert abs(entry["probability"] - answer["probability"]) <= SAME_MODEL_BOUND
    result = httpx.get(f"{api_url}/v1/imaging/results/{entry['result_id']}", headers=headers,
                       timeout=30)
    assert result.status_code == 200, result.text

    for server, port in ((gateway, settings["port"]), (api, api_port), (model, model_port)):
        assert server.stop() == [], server.log_tail()
        assert not listening(port), server.name
    assert bento.files() == contents
