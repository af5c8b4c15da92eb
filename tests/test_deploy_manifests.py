"""The Kubernetes manifests in deploy/ against the code: the Bento's image, the ports the CLI
and the gateway listen on, BentoML's probes, the variables the code reads (and values it accepts),
the volumes behind CLINASSIST_HOME and CLINASSIST_DATA, and which workloads may scale.
(tests/test_bento.py runs the same containers' commands from a built Bento.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from bentoml._internal.container.generate import BENTO_PATH, BENTO_UID_GID

import deploy_manifests
from clinassist.cli import parser
from clinassist.config import api_workers, max_batch_size
from clinassist.serving.dicom.pixels import Limits
from clinassist.serving.gateway.config import CONFIG_FILE, GatewayConfig
from clinassist.serving.gateway.worklist import DEFAULT_MAX_WAIT, max_wait_from_env
from clinassist.serving.medication.cds import CardPolicy
from clinassist.serving.imaging.allocator import ARENAS
from clinassist.serving.imaging.model_registry import MODEL_STORE_ENV
from clinassist.serving.storage import DATABASE_URL_ENV

ROOT = Path(__file__).resolve().parent.parent
BENTO_SERVICES = {"clinassist": "api", "triage-model": "triage-model"}  # workload -> component
GATEWAY = "clinassist-gateway"
STATEFUL = ("clinassist", GATEWAY)  # SQLite stores in CLINASSIST_HOME: one replica each
VARIABLE = re.compile(r"""["'](CLINASSIST_[A-Z_]+)["']""")


@pytest.fixture(scope="module")
def manifests() -> deploy_manifests.Manifests:
    return deploy_manifests.load()


def variables_the_code_reads() -> set[str]:
    """CLINASSIST_* names quoted in the code the services run (serving/ and clinassist/)."""
    sources = [*(ROOT / "serving").rglob("*.py"), *(ROOT / "clinassist").glob("*.py")]
    return {name for source in sources for name in VARIABLE.findall(source.read_text())}


def pod(manifests, workload: str) -> dict:
    return manifests.workload(workload)["spec"]["template"]["spec"]


def port_of(container: dict, name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return port


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def mounts(manifests, workload: str) -> dict[str, tuple[dict, dict]]:
    """mountPath -> (volumeMount, volume) of the workload's container."""
    volumes = {v["name"]: v for v in pod(manifests, workload).get("volumes", [])}
    return {m["mountPath"]: (m, volumes[m["name"]])
            for m in manifests.container(workload).get("volumeMounts", [])}


def gateway_config(manifests, tmp_path) -> GatewayConfig:
    """The ConfigMap's gateway.json read by the gateway's own loader."""
    path = tmp_path / CONFIG_FILE
    path.write_text(manifests.get("ConfigMap", "clinassist-gateway")["data"][CONFIG_FILE])
    return GatewayConfig.load(path)


def test_kustomization_applies_every_manifest_and_names_the_bentos_image(manifests):
    listed = set(manifests.kustomization["resources"])
    assert listed == {p.name for p in (ROOT / "deploy").glob("*.yaml")} - {"kustomization.yaml"}
    bento_name = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["name"]
    assert [image["name"] for image in manifests.kustomization["images"]] == [bento_name]
    for workload in manifests.of_kind(*deploy_manifests.WORKLOAD_KINDS):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert container["image"] == bento_name, workload["metadata"]["name"]


def test_http_services_listen_where_the_cli_serves_and_the_api_finds_the_model(manifests):
    cli_port = parser().parse_args(["serve"]).port
    for workload in BENTO_SERVICES:
        container = manifests.container(workload)
        assert container["args"][0] == "start-http-server"  # the image's entrypoint, one service
        assert int(option(container["args"], "--port")) == port_of(container, "http") == cli_port
        assert option(container["args"], "--host") == "0.0.0.0"
    model_args = manifests.container("triage-model")["args"]
    assert option(model_args, "--service-name") == "triage-model"
    name, url = option(manifests.container("clinassist")["args"], "--depends").split("=", 1)
    service = manifests.get("Service", urlsplit(url).hostname)
    assert name == "triage-model" == service["metadata"]["name"]
    (port,) = service["spec"]["ports"]
    assert urlsplit(url).port == port["port"] and port["targetPort"] == "http"


def test_services_select_their_workloads_by_named_ports(manifests):
    for service in manifests.of_kind("Service"):
        selected = [w for w in manifests.of_kind(*deploy_manifests.WORKLOAD_KINDS)
                    if service["spec"]["selector"].items()
                    <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, service["metadata"]["name"]
        container = manifests.container(selected[0]["metadata"]["name"])
        for port in service["spec"]["ports"]:
            port_of(container, port["targetPort"])  # exactly one container port of that name


def test_the_gateway_listens_on_all_interfaces_at_its_container_port(manifests, tmp_path):
    config = gateway_config(manifests, tmp_path)
    container = manifests.container(GATEWAY)
    assert config.host == "0.0.0.0" and config.port == port_of(container, "dicom")
    assert container["args"] == ["python", "-m", "clinassist", "gateway", "serve"]
    service = manifests.get("Service", GATEWAY)
    assert [p["port"] for p in service["spec"]["ports"]] == [config.port]


def test_bentoml_services_are_probed_at_livez_and_readyz(manifests):
    for workload in BENTO_SERVICES:
        container = manifests.container(workload)
        probes = {kind: container[kind]["httpGet"]
                  for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert {kind: probe["path"] for kind, probe in probes.items()} == {
            "startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
        assert all(probe["port"] == "http" for probe in probes.values())
    gateway = manifests.container(GATEWAY)
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert gateway[kind] == {**gateway[kind], "tcpSocket": {"port": "dicom"}}


# Read by the code but set by no manifest, and why.
NOT_DEPLOYED = {
    "CLINASSIST_API_KEY": "an admin's own key, read by `clinassist models promote --override` "
                          "from the shell of the person who runs it; never stored in the cluster",
    "CLINASSIST_RESULTS_DIR": "its default, the home's results/, is right while each home has one "
                              "API and one gateway (deploy/ as shipped); replicas set it to a "
                              "folder they all mount (README, Scaling out)",
}
DATABASE_SECRET = {"name": "clinassist-database", "key": "url", "optional": True}


def test_every_variable_the_code_reads_is_set_and_only_those(manifests):
    read = variables_the_code_reads() - set(NOT_DEPLOYED)
    set_anywhere: set[str] = set()
    for workload in (*BENTO_SERVICES, GATEWAY):
        variables = {**manifests.environment(workload), **manifests.secrets(workload)}
        assert variables["BENTOML_DO_NOT_TRACK"] == "true", workload
        ours = {name for name in variables if name.startswith("CLINASSIST_")}
        assert ours <= read, f"{workload} sets {sorted(ours - read)}, which no code reads"
        set_anywhere |= ours
    assert read <= set_anywhere, f"no manifest sets {sorted(read - set_anywhere)}"


def test_every_service_takes_the_database_url_from_a_secret(manifests):
    """Without the Secret the stores are SQLite files in the home; with it, PostgreSQL, where
    the triage-model pods also read the model registry's ledger."""
    for workload in (*STATEFUL, "triage-model"):
        assert manifests.secrets(workload) == {DATABASE_URL_ENV: DATABASE_SECRET}, workload


def test_the_model_store_is_one_volume_only_the_api_writes(manifests):
    store = manifests.get("ConfigMap", "clinassist-settings")["data"][MODEL_STORE_ENV]
    claim = manifests.get("PersistentVolumeClaim", "clinassist-models")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # pods on several nodes
    for workload in (*BENTO_SERVICES, GATEWAY):
        assert manifests.environment(workload)[MODEL_STORE_ENV] == store, workload
        mount, volume = mounts(manifests, workload)[store]
        assert volume["persistentVolumeClaim"]["claimName"] == "clinassist-models"
        writes = workload == "clinassist"  # `models register` runs in the API's pod
        assert mount.get("readOnly", False) != writes, workload
        assert volume["persistentVolumeClaim"].get("readOnly", False) != writes, workload


def test_the_api_answers_503_before_the_pod_is_killed(manifests):
    """start-http-server lets a request run until the kubelet's SIGKILL at the pod's grace
    period; the API answers 503 (stopping.py) a second before it."""
    grace = pod(manifests, "clinassist")["terminationGracePeriodSeconds"]
    assert float(manifests.environment("clinassist")["CLINASSIST_STOP_GRACE_S"]) == grace
    assert "--timeout-graceful-shutdown" not in manifests.container("clinassist")["args"]


def test_the_settings_are_the_codes_defaults_and_accepted_by_it(manifests, monkeypatch):
    settings = manifests.get("ConfigMap", "clinassist-settings")["data"]
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert Limits.from_env() == Limits()
    assert max_wait_from_env() == DEFAULT_MAX_WAIT
    assert CardPolicy.from_env() == CardPolicy()
    assert (api_workers(), max_batch_size()) == (1, 1)
    assert settings["CLINASSIST_DDI_MODEL"] == "0"  # non-commercial training data: opt in
    assert settings["MALLOC_ARENA_MAX"] == str(ARENAS)  # as `clinassist serve` sets it


def test_home_and_data_are_the_mounted_volumes(manifests):
    claims = {c["metadata"]["name"]: c for c in manifests.of_kind("PersistentVolumeClaim")}
    for workload in STATEFUL:
        variables, mounted = manifests.environment(workload), mounts(manifests, workload)
        home = variables["CLINASSIST_HOME"]
        mount, volume = mounted[home]
        assert volume["persistentVolumeClaim"]["claimName"] == "clinassist-home"
        config_mount, config_volume = mounted[f"{home}/{CONFIG_FILE}"]
        assert config_mount["subPath"] == CONFIG_FILE and config_mount["readOnly"]
        assert config_volume["configMap"]["name"] == "clinassist-gateway"
        assert pod(manifests, workload)["securityContext"]["fsGroup"] == BENTO_UID_GID
    data_mount, data_volume = mounts(manifests, "clinassist")[
        manifests.environment("clinassist")["CLINASSIST_DATA"]]
    assert data_mount["readOnly"] and data_volume["persistentVolumeClaim"]["readOnly"]
    assert data_volume["persistentVolumeClaim"]["claimName"] in claims
    assert "CLINASSIST_HOME" not in manifests.environment("triage-model")  # stateless


def test_containers_run_as_the_bento_user_in_the_bentos_source(manifests):
    for workload in (*BENTO_SERVICES, GATEWAY):
        security = pod(manifests, workload)["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] == BENTO_UID_GID
        assert not manifests.container(workload)["securityContext"]["allowPrivilegeEscalation"]
    for workload in STATEFUL:  # `python -m clinassist` imports the Bento's copy from here
        assert manifests.container(workload)["workingDir"] == f"{BENTO_PATH}/src"


def test_the_model_scales_apart_and_the_stateful_ones_stay_single_on_one_node(manifests):
    from clinassist.serving.service import Clinassist

    model = manifests.workload("triage-model")["spec"]
    (autoscaler,) = manifests.of_kind("HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "triage-model"}
    assert model["replicas"] >= 2 and autoscaler["spec"]["minReplicas"] >= 2
    assert manifests.container("triage-model")["resources"]["requests"]["cpu"]  # for the HPA
    for workload in STATEFUL:
        spec = manifests.workload(workload)["spec"]
        assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", workload
    assert manifests.get("PersistentVolumeClaim", "clinassist-home")["spec"]["accessModes"] == [
        "ReadWriteOnce"]
    (same_node,) = pod(manifests, GATEWAY)["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    api_labels = manifests.workload("clinassist")["spec"]["template"]["metadata"]["labels"]
    assert same_node["topologyKey"] == "kubernetes.io/hostname"
    assert same_node["labelSelector"]["matchLabels"].items() <= api_labels.items()
    grace = pod(manifests, "clinassist")["terminationGracePeriodSeconds"]
    assert grace > Clinassist.config["traffic"]["timeout"]  # a request in flight may finish
