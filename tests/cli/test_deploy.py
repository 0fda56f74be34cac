"""The deploy files, checked without a container engine or a cluster: the Dockerfile, the compose files,
nginx.conf and the Kubernetes manifests of deploy/k8s.

Their settings validate and ``serve`` would start with them (a container listens on every interface, so
auth must be on); every manifest validates against the Kubernetes 1.37 schemas (kubernetes-validate,
offline, strict: no unknown field); compose and the manifests run the same images with the same
settings, and the wiring between the files (ports, probes, volumes, selectors, limits) holds.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from labelloop.api.permissions import PUBLIC
from labelloop.auth import SigningKeys
from labelloop.server import check_exposure
from labelloop.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.37.0"
#: compose.yaml's API replicas, which nginx balances.
API_SERVICES = ("server-a", "server-b")


def _dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def _dockerfile_uid() -> int:
    text = (DEPLOY / "Dockerfile").read_text()
    found = re.search(r"useradd ([^\\&\n]+)", text)
    assert found, "the Dockerfile adds its user"
    words = shlex.split(found[1])
    assert "--uid" in words, "with a fixed uid, which the Kubernetes pods run as"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] == words[-1], "the image runs as the user it adds"
    return int(words[words.index("--uid") + 1])


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("LABELLOOP_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("LABELLOOP_"):
            monkeypatch.setenv(key, str(value))
    return Settings()


def _setting_names(model: type[BaseModel] = Settings, prefix: str = "LABELLOOP_") -> set[str]:
    """Every environment variable ``Settings`` reads (nested groups with ``__``)."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= _setting_names(kind, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _compose_gpu_worker() -> dict[str, Any]:
    """compose.yaml's worker with compose.gpu.yaml laid over it (as ``docker compose -f -f`` does)."""
    worker = dict(_compose()["services"]["worker"])
    overlay = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())["services"]
    assert set(overlay) == {"worker"}, "the GPU overlay changes the worker only"
    worker.update(overlay["worker"])
    return worker


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in service["environment"].items()}


def _image_cmd() -> list[str]:
    cmd = re.search(r"^CMD (.+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert cmd
    parsed: list[str] = json.loads(cmd[1])
    return parsed


# nginx.conf


def _nginx() -> str:
    return re.sub(r"#[^\n]*", "", (DEPLOY / "nginx.conf").read_text())


def _nginx_directive(name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", _nginx(), re.M)


def _nginx_bytes(size: str) -> int:
    found = re.fullmatch(r"(\d+)([kmg]?)", size.strip().lower())
    assert found, size
    return int(found[1]) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[found[2]]


def _nginx_seconds(time: str) -> float:
    found = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", time.strip())
    assert found, time
    return int(found[1]) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[found[2]]


# Kubernetes manifests


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in _manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name} in deploy/k8s"
    return found[0]


def _pod(deployment: str) -> dict[str, Any]:
    pod: dict[str, Any] = _k8s("Deployment", deployment)["spec"]["template"]
    return pod


def _container(deployment: str) -> dict[str, Any]:
    containers = _pod(deployment)["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """What the container's environment holds from its envFrom (ConfigMaps, Secrets) and env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_k8s("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            secret = _k8s("Secret", source["secretRef"]["name"])
            env.update(secret.get("stringData", {}))
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    for var in container.get("env", []):
        env[var["name"]] = var["value"]
    return env


def _pod_settings(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    return _settings({**_dockerfile_env(), **_container_env(container)}, monkeypatch)


def _port(container: dict[str, Any], port: int | str) -> int:
    """A port as a probe or a Service names it (a number, or the name of a container port)."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert len(named) == 1, f"the container has one port named {port}"
    return int(named[0])


def _bytes(quantity: str | int) -> int:
    found = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    assert found, quantity
    scale = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    scale |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return int(found[1]) * scale[found[2]]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "plain label selectors"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


# the image


def test_the_image_serves_every_interface_with_auth_on(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(_dockerfile_env(), monkeypatch)
    assert settings.host == "0.0.0.0" and settings.auth.enabled
    check_exposure(settings, allow_unauthenticated=False)  # serve starts
    cmd = re.search(r"^CMD (.+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert cmd and "--allow-unauthenticated" not in cmd[1]


def test_the_image_runs_unprivileged_with_a_health_check() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the last USER is not root"
    assert _dockerfile_uid() != 0
    health = re.search(r"^HEALTHCHECK .*\n?.*CMD (.+)$", text, re.M)
    assert health and "/health" in health[1]


def test_the_build_context_leaves_out_the_venv_and_data() -> None:
    ignored = {line.strip() for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines()}
    assert {".venv/", "data/", ".git/"} <= ignored
    # The web pages come from the image's web stage, never from a developer's built tree.
    assert {"server/labelloop/web/static/", "server/labelloop/web/ohif/", "web/node_modules/"} <= ignored


def test_the_image_builds_the_web_pages_the_package_serves() -> None:
    """The dashboard and OHIF are git-ignored build outputs: the image must build them (as `make web
    ohif` does) into the package before pip installs it, or the server would answer 404 for them."""
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    web = [s for s in stages if re.match(r"\S+ AS web\b", s)]
    assert len(web) == 1, "one stage named web"
    assert "npm ci" in web[0] and "npm run --silent build" in web[0], "the dashboard from the lockfile"
    assert "ohif/install.py /src/server/labelloop/web/ohif" in web[0], "OHIF, pinned and checked"
    final = stages[-1]
    copies = re.findall(r"^COPY --from=web (\S+) (\S+)$", final, re.M)
    assert copies == [
        ("/src/server/labelloop/web/static", "./server/labelloop/web/static"),
        ("/src/server/labelloop/web/ohif", "./server/labelloop/web/ohif"),
    ]
    assert final.index("COPY --from=web") < final.index("pip install"), "in place before the package is built"
    package_data = (DEPLOY.parent / "pyproject.toml").read_text()
    assert '"web/static/*"' in package_data and '"web/ohif/**/*"' in package_data


# compose


def test_compose_settings_validate_and_publish_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    for name in API_SERVICES:
        settings = _settings({**_dockerfile_env(), **_env(services[name])}, monkeypatch)
        assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")
        check_exposure(settings, allow_unauthenticated=False)
        assert not services[name].get("ports"), f"{name} is reached through nginx only"
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert "nginx" in published
    for name, ports in published.items():
        assert all(str(port).startswith("127.0.0.1:") for port in ports), f"{name} publishes on loopback"


def test_compose_commands_are_ones_the_cli_accepts() -> None:
    from labelloop.cli import _parser

    services = _compose()["services"]
    serve = _image_cmd()
    assert serve[0] == "labelloop" and _parser().parse_args(serve[1:]).command == "serve"
    for name in API_SERVICES:
        assert "command" not in services[name], f"{name} runs the image's CMD (serve)"
    worker = services["worker"]["command"]
    assert worker[0] == "labelloop"
    assert _parser().parse_args(worker[1:]).command == "worker"
    for name in API_SERVICES:
        assert _env(services[name])["LABELLOOP_JOBS__WORKERS"] == "0", "jobs run in the worker"
        assert services["worker"]["environment"] == services[name]["environment"]
        assert services["worker"]["volumes"] == services[name]["volumes"], "one data dir for all"


def test_compose_replicas_share_the_database_the_data_dir_and_so_the_signing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _compose()["services"]
    replicas = [services[name] for name in API_SERVICES]
    assert len({json.dumps(r, sort_keys=True) for r in replicas}) == 1, "the replicas are alike"
    assert replicas[0]["image"] == services["worker"]["image"]
    settings = _settings({**_dockerfile_env(), **_env(replicas[0])}, monkeypatch)
    assert settings.database_url and not settings.database_url.startswith("sqlite")
    # The signing key lives at DATA_DIR/auth/signing-keys.json: one named volume at the data dir.
    mounts = [str(v).split(":") for v in replicas[0]["volumes"]]
    data = [source for source, target, *_ in mounts if target == str(settings.data_dir)]
    assert len(data) == 1 and data[0] in _compose()["volumes"], "a named volume holds the data dir"
    assert not [m for m in mounts if len(m) > 2 and m[1] == str(settings.data_dir) and m[2] == "ro"]


def test_compose_logs_in_to_its_own_postgresql_and_orthanc(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    settings = _settings({**_dockerfile_env(), **_env(services[API_SERVICES[0]])}, monkeypatch)
    assert settings.database_url
    url = make_url(settings.database_url)
    db = services["db"]
    assert url.host == "db" and (url.port or 5432) == 5432
    assert (url.username, url.password, url.database) == (
        db["environment"]["POSTGRES_USER"],
        db["environment"]["POSTGRES_PASSWORD"],
        db["environment"]["POSTGRES_DB"],
    )
    assert settings.studies
    studies = urlsplit(settings.studies)
    orthanc = services["orthanc"]
    assert (studies.scheme, studies.hostname, studies.port, studies.path) == (
        "http",
        "orthanc",
        8042,
        "/dicom-web",
    )
    assert orthanc["environment"]["DICOM_WEB_PLUGIN_ENABLED"] == "true"
    users = json.loads(orthanc["environment"]["ORTHANC__REGISTERED_USERS"])
    assert users[settings.dicomweb.username] == settings.dicomweb.password
    for name in API_SERVICES:
        assert {"db", "orthanc"} <= set(services[name]["depends_on"])


def test_nginx_balances_both_replicas_with_the_servers_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    settings = _settings({**_dockerfile_env(), **_env(services[API_SERVICES[0]])}, monkeypatch)
    upstreams = dict(re.findall(r"upstream\s+(\S+)\s*\{(.*?)\}", _nginx(), re.S))
    assert len(upstreams) == 1
    (name, body), *_ = upstreams.items()
    servers = re.findall(r"^\s*server\s+(\S+)", body, re.M)
    assert servers == [f"{replica}:{settings.port}" for replica in API_SERVICES]
    assert _nginx_directive("proxy_pass") == [f"http://{name}"]
    headers = dict(h.split(None, 1) for h in _nginx_directive("proxy_set_header"))
    assert headers["Host"] == "$http_host", "the host with its port, for the DICOMweb proxy's URLs"
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["X-Forwarded-Host"] == "$http_host"
    for replica in API_SERVICES:
        assert _env(services[replica]).get("FORWARDED_ALLOW_IPS"), "uvicorn trusts nginx's headers"
    (body_size,) = _nginx_directive("client_max_body_size")
    assert _nginx_bytes(body_size) == settings.datastore.upload_max_bytes
    (read_timeout,) = _nginx_directive("proxy_read_timeout")
    assert _nginx_seconds(read_timeout) > settings.jobs.run_sync_timeout_s
    nginx = services["nginx"]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert set(API_SERVICES) <= set(nginx["depends_on"])


# Kubernetes: the schemas


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(docs), f"{path.name} holds no empty document"
    for doc in docs:
        try:
            version = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            pytest.fail(f"{path.name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}: {exc}")
        assert version == "1.37"
        assert "namespace" not in doc["metadata"], "kustomization.yaml sets the namespace"


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _manifest_files())
    namespaces = [d for d in _k8s_docs() if d["kind"] == "Namespace"]
    assert [n["metadata"]["name"] for n in namespaces] == [kustomization["namespace"]]
    labels = namespaces[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) not installed")
def test_kustomize_renders_valid_manifests_in_the_namespace() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert len(docs) == len(_k8s_docs())
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]


# Kubernetes and compose: the same images and settings


def test_every_setting_named_is_a_real_one() -> None:
    """``Settings`` ignores unknown variables: a misspelt name would be dropped without a word."""
    named: dict[str, set[str]] = {"Dockerfile": set(_dockerfile_env())}
    for name, service in _compose()["services"].items():
        named[f"compose {name}"] = set(service.get("environment", {}))
    named["compose.gpu worker"] = set(_compose_gpu_worker().get("environment", {}))
    for doc in _k8s_docs():
        if doc["kind"] == "ConfigMap":
            named[f"ConfigMap {doc['metadata']['name']}"] = set(doc["data"])
        if doc["kind"] == "Secret":
            named[f"Secret {doc['metadata']['name']}"] = set(doc.get("stringData", {})) | set(
                doc.get("data", {})
            )
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"] + pod.get("initContainers", []):
                named[f"{doc['metadata']['name']}/{container['name']}"] = set(_container_env(container))
    known = _setting_names()
    assert "LABELLOOP_JOBS__WORKERS" in known and "LABELLOOP_DATABASE_URL" in known
    for where, names in named.items():
        unknown = {n for n in names if n.startswith("LABELLOOP_")} - known
        assert not unknown, f"{where} names no such setting: {sorted(unknown)}"
    assert named["ConfigMap labelloop-settings"] and named["Secret labelloop-env"]


#: What the manifests set differently from compose.yaml's servers, on purpose (Settings fields).
INTENDED_DIFFERENCES = {
    "database_url": "compose runs its own PostgreSQL; the cluster uses the hospital's (a Secret)",
    "studies": "compose runs its own Orthanc; the cluster reads the hospital's PACS",
    "dicomweb.username": "the PACS account: compose's Orthanc user, the hospital's in the Secret",
    "dicomweb.password": "likewise, a secret",
}


def _dump_without(settings: Settings, fields: set[str]) -> dict[str, Any]:
    dump = settings.model_dump(mode="json")
    for dotted in fields:
        *groups, last = dotted.split(".")
        holder = dump
        for group in groups:
            holder = holder[group]
        del holder[last]
    return dump


def test_the_manifests_set_the_settings_compose_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    compose_env = _env(_compose()["services"][API_SERVICES[0]])
    api_env = _container_env(_container("labelloop-api"))
    assert set(api_env) == set(compose_env), "the same variables"
    secret = _k8s("Secret", "labelloop-env")["stringData"]
    for key, value in compose_env.items():
        if key not in secret and not key.startswith("LABELLOOP_"):
            assert api_env[key] == value, key  # e.g. FORWARDED_ALLOW_IPS
    in_compose = _settings({**_dockerfile_env(), **compose_env}, monkeypatch)
    in_k8s = _pod_settings(_container("labelloop-api"), monkeypatch)
    assert _dump_without(in_k8s, set(INTENDED_DIFFERENCES)) == _dump_without(
        in_compose, set(INTENDED_DIFFERENCES)
    )
    assert in_k8s.database_url and in_k8s.database_url.startswith("postgresql+psycopg://")
    assert in_k8s.studies and in_k8s.studies.endswith("/dicom-web")
    # The Secret is a template: its passwords are placeholders, never real ones.
    assert make_url(in_k8s.database_url).password == "CHANGE-ME"
    assert in_k8s.dicomweb.password == "CHANGE-ME"
    assert _container_env(_container("labelloop-worker")) == api_env, "the worker has the API's settings"


def test_the_deployments_run_compose_images() -> None:
    services = _compose()["services"]
    for name in API_SERVICES:
        assert _container("labelloop-api")["image"] == services[name]["image"]
    assert services["worker"]["image"] == services[API_SERVICES[0]]["image"]
    for init in _pod("labelloop-api")["spec"]["initContainers"]:
        assert init["image"] == _container("labelloop-api")["image"]
    gpu_worker = _compose_gpu_worker()
    assert _container("labelloop-worker")["image"] == gpu_worker["image"]
    assert gpu_worker["image"] != services["worker"]["image"], "the CUDA build has its own tag"
    # The CUDA build is the Dockerfile's, with a build argument it declares.
    args = gpu_worker["build"]["args"]
    declared = set(re.findall(r"^ARG (\w+)", (DEPLOY / "Dockerfile").read_text(), re.M))
    assert set(args) <= declared and "TORCH_INDEX" in args
    assert "$TORCH_INDEX" in (DEPLOY / "Dockerfile").read_text()
    assert "/whl/cpu" not in args["TORCH_INDEX"], "the training image takes a CUDA torch"
    devices = gpu_worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


# Kubernetes: the API


def test_the_api_serves_with_auth_and_probes_health_on_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelloop.cli import _parser

    deployment = _k8s("Deployment", "labelloop-api")
    assert deployment["spec"]["replicas"] >= 2
    container = _container("labelloop-api")
    command = container["command"] + container.get("args", [])
    assert command[0] == "labelloop" and "--allow-unauthenticated" not in command
    args = _parser().parse_args(command[1:])
    assert args.command == "serve"
    settings = _pod_settings(container, monkeypatch)
    if args.port is not None:
        settings = settings.model_copy(update={"port": args.port})
    assert settings.auth.enabled and settings.jobs.workers == 0
    check_exposure(settings, allow_unauthenticated=False)
    # Readiness: /health (200 while the database answers), open without a log-in. /info/ is not: with
    # auth on a probe (no token) gets 401 there.
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/health" and ("GET", "/health") in PUBLIC
    assert ("GET", "/info/") not in PUBLIC
    assert _port(container, readiness["port"]) == settings.port
    # Liveness and startup: a route that answers without a log-in and without the database.
    for probe in ("livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert ("GET", get["path"]) in PUBLIC and get["path"] != "/health", probe
        assert _port(container, get["port"]) == settings.port, probe
    service = _k8s("Service", "labelloop-api")
    assert _selects({"matchLabels": service["spec"]["selector"]}, _pod("labelloop-api")["metadata"]["labels"])
    (service_port,) = service["spec"]["ports"]
    assert _port(container, service_port["targetPort"]) == settings.port
    ingress = _k8s("Ingress", "labelloop")
    backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert backends and all(b["name"] == "labelloop-api" for b in backends)
    assert all(
        b["port"] in ({"name": service_port["name"]}, {"number": service_port["port"]}) for b in backends
    )
    pdb = _k8s("PodDisruptionBudget", "labelloop-api")
    assert _selects(pdb["spec"]["selector"], _pod("labelloop-api")["metadata"]["labels"])
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_the_api_memory_holds_its_decode_budget_and_inference_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    container = _container("labelloop-api")
    settings = _pod_settings(container, monkeypatch)
    budgets = settings.datastore.decode_budget_bytes + settings.inference.cache_bytes
    resources = container["resources"]
    assert _bytes(resources["requests"]["memory"]) > budgets
    assert _bytes(resources["limits"]["memory"]) >= _bytes(resources["requests"]["memory"])
    assert "cpu" in resources["requests"]


def test_the_ingress_matches_nginx_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _pod_settings(_container("labelloop-api"), monkeypatch)
    ingress = _k8s("Ingress", "labelloop")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    notes = {
        k.removeprefix("nginx.ingress.kubernetes.io/"): v
        for k, v in ingress["metadata"]["annotations"].items()
    }
    (body_size,) = _nginx_directive("client_max_body_size")
    assert (
        _nginx_bytes(notes["proxy-body-size"])
        == _nginx_bytes(body_size)
        == settings.datastore.upload_max_bytes
    )
    (read_timeout,) = _nginx_directive("proxy_read_timeout")
    assert (
        float(notes["proxy-read-timeout"]) == _nginx_seconds(read_timeout) > settings.jobs.run_sync_timeout_s
    )
    assert notes["proxy-request-buffering"] == _nginx_directive("proxy_request_buffering")[0] == "off"
    (upstream_hash,) = re.findall(r"^\s*hash\s+(\S+)", _nginx(), re.M)
    assert notes["upstream-hash-by"] == upstream_hash
    assert ingress["spec"]["tls"], "https"


# Kubernetes: the worker


def test_the_worker_runs_jobs_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelloop.cli import _parser

    deployment = _k8s("Deployment", "labelloop-worker")
    container = _container("labelloop-worker")
    command = container["command"] + container.get("args", [])
    assert command[0] == "labelloop" and _parser().parse_args(command[1:]).command == "worker"
    resources = container["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    assert (
        resources["requests"].get("nvidia.com/gpu", resources["limits"]["nvidia.com/gpu"])
        == (resources["limits"]["nvidia.com/gpu"])
    ), "an extended resource's request equals its limit"
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert _bytes(resources["limits"]["memory"]) >= _bytes(resources["requests"]["memory"])
    pod = _pod("labelloop-worker")["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    # A rolling update would wait for a second free GPU before the old pod lets go of its own.
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    settings = _pod_settings(container, monkeypatch)
    assert pod["terminationGracePeriodSeconds"] > settings.jobs.cancel_grace_s + 10
    assert "ports" not in container and "readinessProbe" not in container, "it serves nothing"
    shm = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(shm) == 1 and volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory"


# Kubernetes: both Deployments


def test_the_pvc_is_shared_and_mounted_at_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    (pvc,) = [d for d in _k8s_docs() if d["kind"] == "PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "the API replicas and the worker share it"
    for deployment in ("labelloop-api", "labelloop-worker"):
        pod = _pod(deployment)["spec"]
        claims = [v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim")]
        assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v["name"] in claims] == [
            pvc["metadata"]["name"]
        ]
        for container in pod["containers"] + pod.get("initContainers", []):
            settings = _pod_settings(container, monkeypatch)
            mounts = [m for m in container["volumeMounts"] if m["name"] in claims]
            assert [m["mountPath"] for m in mounts] == [str(settings.data_dir)], container["name"]
            assert not mounts[0].get("readOnly") and not mounts[0].get("subPath")


def test_pods_run_as_the_image_user_with_a_read_only_root() -> None:
    uid = _dockerfile_uid()
    for deployment in ("labelloop-api", "labelloop-worker"):
        pod = _pod(deployment)["spec"]
        assert pod["automountServiceAccountToken"] is False
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == uid
        assert context["fsGroup"] == context["runAsGroup"], "the volumes are writable by the user's group"
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{deployment}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where
        for container in pod["containers"]:
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], f"{deployment}: a writable /tmp"


def _keys_script() -> tuple[dict[str, Any], str]:
    (init,) = _pod("labelloop-api")["spec"]["initContainers"]
    assert init["command"][:2] == ["python", "-c"]
    return init, init["command"][2]


def _install_keys(source: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    _, script = _keys_script()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    env |= {"LABELLOOP_DATA_DIR": str(data_dir), "SIGNING_KEYS_FILE": str(source)}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)


def test_the_signing_keys_secret_reaches_the_data_dir() -> None:
    init, _ = _keys_script()
    volumes = {v["name"]: v for v in _pod("labelloop-api")["spec"]["volumes"]}
    source = Path(next(e["value"] for e in init["env"] if e["name"] == "SIGNING_KEYS_FILE"))
    (mount,) = [m for m in init["volumeMounts"] if source.is_relative_to(m["mountPath"])]
    assert mount["readOnly"] is True
    secret = _k8s("Secret", volumes[mount["name"]]["secret"]["secretName"])
    assert str(source.relative_to(mount["mountPath"])) in secret["stringData"]
    assert volumes[mount["name"]]["secret"]["defaultMode"] & 0o040, "the pod's group (fsGroup) reads it"
    assert not any(m["name"] == mount["name"] for m in _container("labelloop-api")["volumeMounts"])


def test_the_init_container_installs_good_keys_and_refuses_the_template(tmp_path: Path) -> None:
    good = tmp_path / "made" / "signing-keys.json"
    SigningKeys(good).rotate()  # as `labelloop keys rotate` makes it: two keys
    data_dir = tmp_path / "data"
    target = data_dir / "auth" / "signing-keys.json"

    installed = _install_keys(good, data_dir)
    assert installed.returncode == 0, installed.stderr
    assert target.read_bytes() == good.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert SigningKeys(target).current == SigningKeys(good).current
    assert good.read_bytes().decode() not in installed.stdout + installed.stderr, "the keys are not logged"
    mtime = target.stat().st_mtime_ns
    assert _install_keys(good, data_dir).returncode == 0
    assert target.stat().st_mtime_ns == mtime, "unchanged keys are not rewritten (servers reread on change)"

    template = tmp_path / "template.json"
    template.write_text(_k8s("Secret", "labelloop-signing-keys")["stringData"]["signing-keys.json"])
    short = tmp_path / "short.json"
    short.write_text(
        json.dumps({"keys": [{"kid": "a", "secret": base64.b64encode(b"x" * 8).decode(), "created_at": 0}]})
    )
    for bad in (template, short, tmp_path / "missing.json"):
        refused = _install_keys(bad, data_dir)
        assert refused.returncode != 0 and "labelloop keys rotate" in refused.stderr, bad.name
        assert target.read_bytes() == good.read_bytes(), "the installed keys stay"
    assert [p.name for p in target.parent.iterdir()] == [target.name], "no temporary file left"


def _egress_ports(policy: dict[str, Any]) -> set[tuple[str, int]]:
    return {
        (p.get("protocol", "TCP"), p["port"])
        for rule in policy["spec"].get("egress", [])
        for p in rule["ports"]
    }


def test_network_policies_select_the_pods_and_open_only_what_they_need(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policies = {d["metadata"]["name"]: d for d in _k8s_docs() if d["kind"] == "NetworkPolicy"}
    deny = policies.pop("default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    labels = {name: _pod(name)["metadata"]["labels"] for name in ("labelloop-api", "labelloop-worker")}
    for name, policy in policies.items():
        assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"], name
        assert all(rule.get("ports") for rule in policy["spec"]["egress"]), (
            f"{name}: every egress names its ports"
        )
    chosen = {}
    for deployment, pod_labels in labels.items():
        selecting = [n for n, p in policies.items() if _selects(p["spec"]["podSelector"], pod_labels)]
        assert len(selecting) == 1, f"one policy selects the {deployment} pods"
        chosen[deployment] = policies[selecting[0]]

    api, worker = chosen["labelloop-api"], chosen["labelloop-worker"]
    container = _container("labelloop-api")
    settings = _pod_settings(container, monkeypatch)
    (rule,) = api["spec"]["ingress"]
    assert [_port(container, p["port"]) for p in rule["ports"]] == [settings.port]
    assert rule["from"] and all("namespaceSelector" in peer for peer in rule["from"]), (
        "from the ingress controller"
    )
    namespaces = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"]]
    assert (
        namespaces == ["ingress-nginx"]
        and _k8s("Ingress", "labelloop")["spec"]["ingressClassName"] == "nginx"
    )
    assert worker["spec"].get("ingress", []) == [], "nothing reaches the worker"

    # Out: DNS, the database of the Secret, the PACS of the ConfigMap and compose's Orthanc.
    assert settings.database_url and settings.studies
    compose = _settings({**_dockerfile_env(), **_env(_compose()["services"][API_SERVICES[0]])}, monkeypatch)
    assert compose.studies
    needed = {("UDP", 53), ("TCP", make_url(settings.database_url).port or 5432)}
    for studies in (urlsplit(settings.studies), urlsplit(compose.studies)):
        needed.add(("TCP", studies.port or {"https": 443, "http": 80}[studies.scheme]))
    for policy in (api, worker):
        assert needed <= _egress_ports(policy), policy["metadata"]["name"]


@pytest.mark.skipif(not Path("/usr/sbin/nginx").exists(), reason="Debian's nginx is not installed")
def test_nginx_itself_accepts_nginx_conf(tmp_path: Path) -> None:
    """Debian's nginx (the one the replica tests run) loads deploy/nginx.conf as its http block, with the
    compose services' names replaced by loopback addresses (nginx resolves upstream names as it loads)."""
    conf = (DEPLOY / "nginx.conf").read_text()
    for service in API_SERVICES:
        assert f"server {service}:8000 " in conf
        conf = conf.replace(f"server {service}:8000 ", "server 127.0.0.1:8000 ")
    conf = re.sub(r"^(\s*)listen 80;", r"\1listen 127.0.0.1:18080;", conf, flags=re.M)
    temp = "".join(
        f"    {name}_temp_path {tmp_path / name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp}{conf}\n}}\n"
    )
    checked = subprocess.run(
        ["/usr/sbin/nginx", "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr


def test_the_image_extras_are_the_package_extras() -> None:
    """The image installs the package with ``EXTRAS`` (PostgreSQL by default, Ray on request): each one
    named, by default or in the Dockerfile's example, is an extra of pyproject.toml."""
    import tomllib

    text = (DEPLOY / "Dockerfile").read_text()
    extras = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    default = re.search(r"^ARG EXTRAS=(\S+)$", text, re.M)
    example = re.search(r"--build-arg EXTRAS=(\S+)", text)
    assert default and example and '".[$EXTRAS]"' in text
    for named in (default[1], example[1]):
        assert set(named.split(",")) <= set(extras), named
    assert default[1] == "postgres" and "ray" in example[1].split(",")
