"""The Helm chart (deploy/helm/themisdb), rendered and validated.

``helm lint`` and ``helm template`` run on the default values and on two non-default
sets (TLS with client certificates from PEM values, the binary port, the ServiceMonitor,
three workers, existing Secrets); every manifest is validated strictly against the
newest Kubernetes schemas ``kubernetes-validate`` bundles. The rendered containers'
configuration is then run through the pipeline's own code: their ``features.yaml`` and
environment through :func:`pipeline.config.load_settings`, the facade's command line
through ``themis``'s parser, its certificates through the server's TLS context, its
probe path through the facade's route table.

The tests need helm 3.22.0 (``scripts/ensure-helm.sh`` builds it once into the cache;
``HELM_BIN`` names another); without it they fail, never skip.
"""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from pipeline import cli
from pipeline.config import ENV_ALIASES, Settings, load_settings, settings_to_env
from pipeline.facade import create_facade
from pipeline.facade.app import FACADE_STATE
from pipeline.facade.auth import load_keyring
from pipeline.kafka.local_broker import themis_home
from pipeline.replication import server_ssl_context
from pipeline.stack import make_pki
from pipeline.worker import pages
from tests.fixtures.support import REPO

pytestmark = pytest.mark.e2e

HELM_VERSION = "3.22.0"
CHART = REPO / "deploy" / "helm" / "themisdb"
RELEASE = "themis"
NAMESPACE = "ingest"
FULLNAME = f"{RELEASE}-themisdb"
KUBERNETES_VERSION = kubernetes_validate.utils.latest_version()
"""The newest Kubernetes release whose schemas kubernetes-validate bundles."""

Manifest = dict[str, Any]


def helm_binary() -> str:
    """``$HELM_BIN``, else the helm ``scripts/ensure-helm.sh`` builds; fails without one."""
    path = os.environ.get("HELM_BIN") or str(themis_home() / "bin" / f"helm-{HELM_VERSION}")
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no helm binary at {path}; run scripts/ensure-helm.sh (builds helm "
            f"{HELM_VERSION} once with go install, about 5 minutes) or set HELM_BIN"
        )
    return path


def helm(*args: str) -> str:
    done = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real CA, server certificate and key (:func:`pipeline.stack.make_pki`) as PEM text."""
    d = make_pki(tmp_path_factory.mktemp("pki"))
    return {
        "cert": (d / "server.pem").read_text(),
        "key": (d / "server.key").read_text(),
        "clientCA": (d / "ca.pem").read_text(),
    }


PROMETHEUS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}


def variants(pem: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The value sets the tests render: the defaults, and two that change everything
    the chart makes optional."""
    return {
        "default": {},
        "mtls-binary-3-workers": {
            "worker": {"replicas": 3, "persistence": {"size": "50Gi", "storageClassName": "ssd"}},
            "facade": {"binaryPort": 9443},
            "tls": {"enabled": True, "requireClientCertificates": True, **pem},
            "metrics": {
                "serviceMonitor": {
                    "enabled": True,
                    "facadeTlsConfig": {"insecureSkipVerify": True},
                }
            },
            "networkPolicy": {"workerIngressFrom": [PROMETHEUS_PEER]},
            "apiKeys": {"keys": "w1:writer,a1:admin"},
            "env": {"THEMIS_TS_AUTO_BUFFER_MAX_POINTS": "2000", "THEMIS_WAL_COMPRESSION": "none"},
        },
        "existing-secrets": {
            "worker": {"replicas": 2},
            "tls": {"enabled": True, "existingSecret": "themis-facade-tls"},
            "apiKeys": {"existingSecret": "themis-api-keys"},
            "pageKey": {"existingSecret": "themis-page-key", "secretKey": "key"},
            "metrics": {"serviceMonitor": {"enabled": True}, "podAnnotations": False},
        },
    }


VARIANTS = ("default", "mtls-binary-3-workers", "existing-secrets")


@pytest.fixture(scope="module")
def values_files(pem: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("values")
    files = {}
    for name, values in variants(pem).items():
        files[name] = d / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump(values))
    return files


@pytest.fixture(scope="module")
def rendered(values_files: dict[str, Path]) -> dict[str, list[Manifest]]:
    """Every variant's manifests, as ``helm template`` renders them."""
    out = {}
    for name, path in values_files.items():
        text = helm(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBERNETES_VERSION,
            "-f",
            str(path),
        )
        out[name] = [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def only(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {kinds(manifests)}"
    return found[0]


def kinds(manifests: list[Manifest]) -> list[str]:
    return sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)


def container(workload: Manifest) -> Manifest:
    (only_container,) = workload["spec"]["template"]["spec"]["containers"]
    result: Manifest = only_container
    return result


def port_number(c: Manifest, name: str) -> int:
    (number,) = [p["containerPort"] for p in c["ports"] if p["name"] == name]
    return int(number)


def secret_value(manifests: list[Manifest], name: str, key: str) -> str | None:
    """A rendered Secret's value (``None`` for a Secret the chart does not make)."""
    for m in manifests:
        if m["kind"] == "Secret" and m["metadata"]["name"] == name:
            return base64.b64decode(m["data"][key]).decode()
    return None


def container_settings(
    manifests: list[Manifest], c: Manifest, workdir: Path
) -> tuple[Settings, dict[str, str]]:
    """What :func:`load_settings` makes of a rendered container: its ``features.yaml``
    from the ConfigMap, its environment with Secret references resolved (a Secret the
    chart does not render, a user's own, stands in as a placeholder)."""
    features = only(manifests, "ConfigMap")["data"]["features.yaml"]
    config = workdir / "features.yaml"
    config.write_text(features)
    env: dict[str, str] = {}
    for var in c["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            found = secret_value(manifests, ref["name"], ref["key"])
            env[var["name"]] = found if found is not None else "user-key:admin"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert Path(env["THEMIS_CONFIG"]).parent.as_posix() in mounts
    env["THEMIS_CONFIG"] = str(config)
    return load_settings(env=env), env


# -- lint and schemas ----------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_passes_strictly(variant: str, values_files: dict[str, Path]) -> None:
    out = helm(
        "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values_files[variant])
    )
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_passes_strict_validation_for_current_kubernetes(
    variant: str, rendered: dict[str, list[Manifest]]
) -> None:
    manifests = rendered[variant]
    validated = []
    for m in manifests:
        if m["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: kubernetes-validate bundles core schemas only (see below)
        try:
            version = kubernetes_validate.validate(m, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{m['kind']}/{m['metadata']['name']}: {exc.message} at {list(exc.path)}")
        assert version == KUBERNETES_VERSION.rsplit(".", 1)[0]
        validated.append(m["kind"])
    assert {"ConfigMap", "Service", "StatefulSet", "Deployment", "NetworkPolicy"} <= set(validated)
    assert "Deployment" not in {
        m["kind"] for m in manifests if m["metadata"]["name"].endswith("-worker")
    }


def test_kubernetes_version_is_a_current_one() -> None:
    major, minor = (int(x) for x in KUBERNETES_VERSION.split(".")[:2])
    assert (major, minor) >= (1, 33), KUBERNETES_VERSION


# -- the worker ----------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_worker_statefulset_keeps_its_data_dir_on_a_claim_and_has_a_headless_service(
    variant: str, rendered: dict[str, list[Manifest]], pem: dict[str, str], tmp_path: Path
) -> None:
    manifests = rendered[variant]
    sts = only(manifests, "StatefulSet")
    worker = container(sts)
    settings, _ = container_settings(manifests, worker, tmp_path)
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (mount,) = [m for m in worker["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert Path(mount["mountPath"]) == settings.worker.data_dir == Path("/var/lib/themis")
    expected = variants(pem)[variant].get("worker", {})
    persistence = expected.get("persistence", {})
    assert claim["spec"]["resources"]["requests"]["storage"] == persistence.get("size", "20Gi")
    assert claim["spec"].get("storageClassName") == persistence.get("storageClassName")
    assert sts["spec"]["replicas"] == expected.get("replicas", 1)
    service = only(manifests, "Service", sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert settings.worker.web_host == "0.0.0.0"
    assert port_number(worker, "metrics") == settings.worker.web_port
    assert settings.worker.page_key, "a worker bound beyond loopback needs its page key"


@pytest.mark.parametrize("variant", VARIANTS)
def test_facade_worker_urls_name_every_worker_pod_by_its_stable_address(
    variant: str, rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    manifests = rendered[variant]
    sts = only(manifests, "StatefulSet")
    facade = only(manifests, "Deployment", f"{FULLNAME}-facade")
    settings, env = container_settings(manifests, container(facade), tmp_path)
    worker_settings, _ = container_settings(manifests, container(sts), tmp_path)
    urls = [urlsplit(u) for u in settings.facade.worker_urls.split(",")]
    service = sts["spec"]["serviceName"]
    pods = [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
    assert [u.hostname for u in urls] == [
        f"{pod}.{service}.{NAMESPACE}.svc.cluster.local" for pod in pods
    ]
    assert {(u.scheme, u.port) for u in urls} == {("http", worker_settings.worker.web_port)}
    # The facade presents the key the workers require.
    assert settings.worker.page_key == worker_settings.worker.page_key
    assert env["THEMIS_WORKER_PAGE_KEY"] == settings.worker.page_key


# -- the network policy --------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policy_selects_worker_pods_and_admits_only_facade_pods_and_peers(
    variant: str, rendered: dict[str, list[Manifest]], pem: dict[str, str]
) -> None:
    manifests = rendered[variant]
    policy = only(manifests, "NetworkPolicy")["spec"]
    worker_labels = only(manifests, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    facade = only(manifests, "Deployment", f"{FULLNAME}-facade")
    facade_labels = facade["spec"]["template"]["metadata"]["labels"]

    def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
        assert set(selector) == {"matchLabels"}
        return bool(selector["matchLabels"].items() <= labels.items())

    assert selects(policy["podSelector"], worker_labels)
    assert not selects(policy["podSelector"], facade_labels)
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    first, *peers = rule["from"]
    assert set(first) == {"podSelector"}, "facade pods of this namespace only"
    assert selects(first["podSelector"], facade_labels)
    assert not selects(first["podSelector"], worker_labels)
    expected_peers = variants(pem)[variant].get("networkPolicy", {}).get("workerIngressFrom", [])
    assert peers == expected_peers
    worker_port = port_number(container(only(manifests, "StatefulSet")), "metrics")
    assert rule["ports"] == [{"port": worker_port, "protocol": "TCP"}]


# -- probes ----------------------------------------------------------------------


class _NoProducer:
    """Building the facade's routes produces nothing."""

    def produce(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("the route table needs no broker")

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0

    def close(self) -> None:
        pass


def probes(c: Manifest) -> Iterator[Manifest]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in c:
            yield c[kind]


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_ask_pages_that_exist_and_need_no_key(
    variant: str, rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    manifests = rendered[variant]
    worker = container(only(manifests, "StatefulSet"))
    worker_probes = list(probes(worker))
    assert len(worker_probes) == 3
    for probe in worker_probes:
        # The worker's one page without its page key (tests/integration/test_worker_pages.py).
        assert probe["httpGet"] == {"path": pages.METRICS, "port": "metrics"}
    facade = container(only(manifests, "Deployment", f"{FULLNAME}-facade"))
    settings, _ = container_settings(manifests, facade, tmp_path)
    app = create_facade(
        settings,
        None,
        producer=_NoProducer(),
        partitions={settings.topic("ts.points"): 1, settings.topic("vectors.ops"): 1},
    )
    routes = app[FACADE_STATE].guard.routes
    facade_probes = list(probes(facade))
    assert len(facade_probes) == 2
    mutual_tls = "--tls-client-ca" in facade["command"]
    for probe in facade_probes:
        if mutual_tls:  # the kubelet has no client certificate
            assert probe["tcpSocket"] == {"port": "http"}
            continue
        get = probe["httpGet"]
        assert get["port"] == "http"
        assert get["scheme"] == ("HTTPS" if "--tls-cert" in facade["command"] else "HTTP")
        spec = routes[("GET", get["path"])]
        assert spec.role is None, f"{get['path']} needs an API key"
    assert port_number(facade, "http") == settings.facade.port


# -- configuration against the code ----------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_environment_name_the_chart_sets_is_one_the_settings_read(
    variant: str, rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    accepted = set(settings_to_env(Settings())) | set(ENV_ALIASES)
    manifests = rendered[variant]
    workloads = [m for m in manifests if m["kind"] in ("StatefulSet", "Deployment")]
    assert len(workloads) == 2
    for workload in workloads:
        c = container(workload)
        names = [var["name"] for var in c["env"]]
        assert len(names) == len(set(names)), f"{workload['metadata']['name']}: {names}"
        assert set(names) <= accepted, sorted(set(names) - accepted)
        container_settings(manifests, c, tmp_path)  # load_settings accepts every value


def test_env_values_override_the_config_file_in_the_rendered_containers(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    manifests = rendered["mtls-binary-3-workers"]
    settings, _ = container_settings(manifests, container(only(manifests, "StatefulSet")), tmp_path)
    assert settings.ts_auto_buffer.max_points_per_buffer == 2000
    assert settings.compressed_wal_shipping.compression_type == "none"
    assert settings.kafka.bootstrap_servers == "kafka:9092"


@pytest.mark.parametrize("variant", VARIANTS)
def test_commands_parse_with_themis_own_parser(
    variant: str, rendered: dict[str, list[Manifest]]
) -> None:
    manifests = rendered[variant]
    parser = cli.build_parser()
    for workload in (m for m in manifests if m["kind"] in ("StatefulSet", "Deployment")):
        command = container(workload)["command"]
        assert command[0] == "themis"
        args = parser.parse_args(command[1:])
        assert args.command in ("worker", "facade")


def test_facade_serves_the_binary_port_and_loads_the_rendered_certificates(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    manifests = rendered["mtls-binary-3-workers"]
    deployment = only(manifests, "Deployment", f"{FULLNAME}-facade")
    facade = container(deployment)
    args = cli.build_parser().parse_args(facade["command"][1:])
    assert args.binary_port == port_number(facade, "binary") == 9443
    service = only(manifests, "Service", f"{FULLNAME}-facade")
    assert {"name": "binary", "port": 9090, "targetPort": "binary", "protocol": "TCP"} in service[
        "spec"
    ]["ports"]
    # Materialise the TLS Secret where the pod mounts it, then load the files as the
    # facade does: a server context that requires client certificates.
    (mount,) = [m for m in facade["volumeMounts"] if m["name"] == "tls"]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    secret = only(manifests, "Secret", volume["secret"]["secretName"])
    assert secret["type"] == "kubernetes.io/tls"
    for key, value in secret["data"].items():
        (tmp_path / key).write_bytes(base64.b64decode(value))

    def local(path: str) -> Path:
        assert path.startswith(mount["mountPath"] + "/"), path
        return tmp_path / Path(path).name

    context = server_ssl_context(
        local(args.tls_cert), local(args.tls_key), local(args.tls_client_ca)
    )
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_existing_secrets_are_referenced_and_not_rendered(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["existing-secrets"]
    assert [m for m in manifests if m["kind"] == "Secret"] == []
    facade = container(only(manifests, "Deployment", f"{FULLNAME}-facade"))
    refs = {
        var["name"]: var["valueFrom"]["secretKeyRef"] for var in facade["env"] if "valueFrom" in var
    }
    assert refs == {
        "THEMIS_WORKER_PAGE_KEY": {"name": "themis-page-key", "key": "key"},
        "THEMIS_FACADE_API_KEYS": {"name": "themis-api-keys", "key": "api-keys"},
    }
    deployment = only(manifests, "Deployment", f"{FULLNAME}-facade")
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "themis-facade-tls"
    args = cli.build_parser().parse_args(facade["command"][1:])
    assert args.tls_cert
    assert args.tls_key
    assert args.tls_client_ca is None


def test_default_install_generates_a_page_key_and_an_admin_api_key(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    manifests = rendered["default"]
    page_key = secret_value(manifests, f"{FULLNAME}-page-key", "page-key")
    assert page_key is not None
    assert len(page_key) == 40
    facade = container(only(manifests, "Deployment", f"{FULLNAME}-facade"))
    settings, _ = container_settings(manifests, facade, tmp_path)
    assert settings.facade.auth_enabled
    keyring = load_keyring(settings.facade)
    (key,) = settings.facade.api_keys.split(",")
    assert keyring.role_of(key.rsplit(":", 1)[0]) is not None
    assert key.endswith(":admin")


# -- scraping --------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["mtls-binary-3-workers", "existing-secrets"])
def test_service_monitor_scrapes_named_ports_of_both_services(
    variant: str, rendered: dict[str, list[Manifest]]
) -> None:
    """The ServiceMonitor is a Prometheus Operator CRD, which kubernetes-validate has no
    schema for: its fields are checked against the Services here."""
    manifests = rendered[variant]
    monitor = only(manifests, "ServiceMonitor")
    spec = monitor["spec"]
    selected = [
        m
        for m in manifests
        if m["kind"] == "Service"
        and spec["selector"]["matchLabels"].items() <= m["metadata"]["labels"].items()
    ]
    jobs = {s["metadata"]["labels"][spec["jobLabel"]]: s for s in selected}
    assert set(jobs) == {"themis-worker", "themis-facade"}
    ports = {p["name"] for s in selected for p in s["spec"]["ports"]}
    by_port = {e["port"]: e for e in spec["endpoints"]}
    assert set(by_port) == {"metrics", "http"}
    assert set(by_port) <= ports
    assert {e["path"] for e in spec["endpoints"]} == {pages.METRICS}
    assert by_port["http"]["scheme"] == "https"
    assert "scheme" not in by_port["metrics"]
