"""Static checks of deploy/: what can be checked without Docker, Kubernetes or systemd.

YAML parses; the compose file, the KubeRay manifest and the Kubernetes objects have the keys they need and agree
with each other; the systemd units parse; the Dockerfile builds a non-root image from a chosen torch; the
environment file names every setting, and no other file uses a LONGTAIL_ variable it does not explain.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
UNITS = sorted(DEPLOY.glob("*.service"))
SCRIPTS = sorted(DEPLOY.rglob("*.sh"))

SETTINGS = {
    "LONGTAIL_STORE_URL",
    "LONGTAIL_STATE_DIR",
    "LONGTAIL_RAY_ADDRESS",
    "LONGTAIL_RAY_DASHBOARD_URL",
    "LONGTAIL_STORAGE_PATH",
    "LONGTAIL_DATA_ROOT",
    "LONGTAIL_API_TOKENS",
    "LONGTAIL_HOST",
    "LONGTAIL_PORT",
    "LONGTAIL_PUBLIC_URL",
    "LONGTAIL_MAX_TRIALS_PER_JOB",
    "LONGTAIL_MAX_EPOCHS",
    "LONGTAIL_MAX_JOBS_PER_OWNER",
    "LONGTAIL_MAX_RUNNING_JOBS",
    "LONGTAIL_MAX_BODY_BYTES",
}
VAR = re.compile(r"\bLONGTAIL_[A-Z0-9_]+\b")


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def env_names(path: Path) -> set[str]:
    """Names assigned in an env file, commented-out optional ones included."""
    return set(re.findall(r"^#?\s*(LONGTAIL_[A-Z0-9_]+)=", path.read_text(), flags=re.M))


def unit(path: Path) -> configparser.ConfigParser:
    # systemd allows repeated keys (EnvironmentFile=, ReadWritePaths=) and '%' specifiers.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text(), source=str(path))
    return parser


def by_kind(path: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs(path):
        out.setdefault(d["kind"], []).append(d)
    return out


# -- every file --------------------------------------------------------------------------------------------------
def test_the_files_are_there():
    for name in (
        "README.md",
        "longtail.env",
        "longtail.service",
        "Dockerfile",
        "docker-compose.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/longtail.yaml",
    ):
        assert (DEPLOY / name).is_file(), name


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(DEPLOY)) for p in YAML_FILES])
def test_yaml_parses(path: Path):
    assert docs(path), f"{path} holds no document"


def test_shell_scripts_parse():
    if SCRIPTS and shutil.which("bash") is None:
        pytest.skip("no bash")
    for script in SCRIPTS:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, f"{script}: {result.stderr}"


# -- the environment file ----------------------------------------------------------------------------------------
def test_env_file_names_every_setting():
    names = env_names(DEPLOY / "longtail.env")
    assert SETTINGS <= names, f"missing from longtail.env: {sorted(SETTINGS - names)}"
    for line in (DEPLOY / "longtail.env").read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", line), f"not KEY=VALUE: {line!r}"


def test_env_file_explains_each_setting():
    lines = (DEPLOY / "longtail.env").read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(LONGTAIL_[A-Z0-9_]+)=", line)
        if match:  # a comment above it, or above the group of settings it belongs to
            j = i - 1
            while j >= 0 and re.match(r"^LONGTAIL_[A-Z0-9_]+=", lines[j]):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"{match.group(1)} has no comment above it"


def test_no_unexplained_longtail_variable_in_deploy():
    explained = env_names(DEPLOY / "longtail.env")
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != "longtail.env":
            unknown = set(VAR.findall(path.read_text())) - explained
            assert not unknown, f"{path.relative_to(DEPLOY)} uses {sorted(unknown)}, not in longtail.env"


def test_env_file_names_real_settings():
    settings = pytest.importorskip("service.settings")
    fields = {f"LONGTAIL_{name.upper()}" for name in settings.Settings.model_fields}
    unknown = env_names(DEPLOY / "longtail.env") - fields
    assert not unknown, f"longtail.env names settings the service does not have: {sorted(unknown)}"


def test_env_file_loads_as_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The service accepts the file once the token placeholder is replaced, and refuses the placeholder."""
    settings = pytest.importorskip("service.settings")
    from pydantic import ValidationError

    for name in [n for n in os.environ if n.startswith("LONGTAIL_")]:
        monkeypatch.delenv(name)
    text = (DEPLOY / "longtail.env").read_text()
    with pytest.raises(ValidationError, match="8 characters"):
        settings.Settings(_env_file=DEPLOY / "longtail.env")
    filled = tmp_path / "longtail.env"
    filled.write_text(re.sub(r"^LONGTAIL_API_TOKENS=.*$", "LONGTAIL_API_TOKENS=s3cret-token-1:alice", text, flags=re.M))
    loaded = settings.Settings(_env_file=filled)
    assert loaded.api_tokens == {"s3cret-token-1": "alice"}
    assert (loaded.max_trials_per_job, loaded.max_epochs, loaded.max_running_jobs) == (64, 500, 1)
    assert str(loaded.storage_path) == "/mnt/longtail/ray_results"
    assert loaded.store_url == "sqlite:////var/lib/longtail/longtail.db"


def test_ray_env_sets_token_auth():
    text = (DEPLOY / "ray.env").read_text()
    assert re.search(r"^RAY_AUTH_MODE=token$", text, flags=re.M)
    assert re.search(r"^RAY_AUTH_TOKEN_PATH=/", text, flags=re.M)


# -- systemd -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", UNITS, ids=[p.name for p in UNITS])
def test_systemd_unit_parses(path: Path):
    parser = unit(path)
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    exec_start = parser["Service"].get("ExecStart", "")
    assert exec_start.startswith("/"), "ExecStart needs an absolute path"
    assert parser["Service"].get("User") and parser["Service"].get("User") != "root"
    assert parser["Install"].get("WantedBy")
    for line in path.read_text().splitlines():
        if line.startswith("EnvironmentFile="):
            name = Path(line.split("=", 1)[1].lstrip("-")).name
            assert (DEPLOY / name).is_file(), f"{path.name}: EnvironmentFile {name} is not in deploy/"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_units_verify(tmp_path: Path):
    """systemd's own parser: unknown keys, bad values. The binaries under /opt are not installed here."""
    for path in UNITS:
        shutil.copy(path, tmp_path / path.name)
    names = [str(tmp_path / p.name) for p in UNITS]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True, timeout=30
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "is not executable" not in line and "/opt/longtail/venv/bin/" not in line
    ]
    assert not problems, "\n".join(problems)


def test_service_unit_is_hardened():
    text = (DEPLOY / "longtail.service").read_text()
    service = unit(DEPLOY / "longtail.service")["Service"]
    assert "longtail serve" in service["ExecStart"]
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "true"
    assert service["ProtectSystem"] == "strict"
    assert "EnvironmentFile=/etc/longtail/longtail.env" in text
    read_write = " ".join(re.findall(r"^ReadWritePaths=(.*)$", text, flags=re.M)).split()
    state_dir = re.search(r"^LONGTAIL_STATE_DIR=(.*)$", (DEPLOY / "longtail.env").read_text(), flags=re.M).group(1)
    storage = re.search(r"^LONGTAIL_STORAGE_PATH=(.*)$", (DEPLOY / "longtail.env").read_text(), flags=re.M).group(1)
    assert state_dir in read_write and storage in read_write


def test_ray_units_start_ray():
    head = unit(DEPLOY / "ray-head.service")["Service"]["ExecStart"]
    worker = unit(DEPLOY / "ray-worker.service")["Service"]["ExecStart"]
    assert "ray start --head" in head and "--port=6379" in head
    assert "--dashboard-host=127.0.0.1" in head and "--block" in head
    assert "ray start --address=" in worker and "--block" in worker
    for name in ("ray-head.service", "ray-worker.service"):
        assert unit(DEPLOY / name)["Service"]["ExecStop"].endswith("ray stop")


# -- Docker ------------------------------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile():
    instructions = dockerfile_instructions()
    assert instructions[0][0] in ("FROM", "ARG")
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms == ["python:3.11-slim"]
    args = [rest for word, rest in instructions if word == "ARG"]
    assert any(a.startswith("TORCH_SPEC") for a in args)
    run = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "$TORCH_SPEC" in run
    assert run.index("$TORCH_SPEC") < run.index('pip install ".[all]"'), "torch is installed before the project"
    # a bare `pip install .` is the client only: the image runs the service, Ray and the trials
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    entry = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entry and entry[-1].replace(" ", "") == '["longtail","serve"]'
    # The COPY sources exist (the build context is the repository root).
    root = DEPLOY.parent
    for word, rest in instructions:
        if word == "COPY":
            for source in rest.split()[:-1]:
                if not source.startswith("--"):
                    assert (root / source).exists(), f"COPY {source}: not in the repository"


def test_compose():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"ray-head", "ray-worker", "longtail"} <= set(services)
    declared_volumes = set(compose.get("volumes") or {})
    declared_secrets = set(compose.get("secrets") or {})
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            build = svc["build"]
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
        for env_file in svc.get("env_file", []):
            env_file = env_file if isinstance(env_file, str) else env_file["path"]
            assert (DEPLOY / env_file).is_file(), f"{name}: env_file {env_file} missing"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name}: volume {source} not declared"
        for secret in svc.get("secrets", []):
            assert (secret if isinstance(secret, str) else secret["source"]) in declared_secrets
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        mode = svc.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.split(":", 1)[1] in services
    head = " ".join(services["ray-head"]["command"])
    assert "--head" in head and "--dashboard-host=127.0.0.1" in head and "--port=6379" in head
    assert "--address=ray-head:6379" in " ".join(services["ray-worker"]["command"])
    # The shared storage is one volume mounted at the same path on all three.
    mounts = {name: {v for v in svc["volumes"] if isinstance(v, str)} for name, svc in services.items()}
    shared = mounts["ray-head"] & mounts["ray-worker"] & mounts["longtail"]
    assert shared, "no volume shared by head, worker and service"
    env = services["longtail"]["environment"]
    assert env["LONGTAIL_STORAGE_PATH"].startswith(next(iter(shared)).split(":")[1])
    assert env["RAY_AUTH_MODE"] == "token"
    for name in ("ray-head", "ray-worker"):
        assert services[name]["environment"]["RAY_AUTH_MODE"] == "token"
    assert services["longtail"]["env_file"] == ["longtail.env"]
    assert "/healthz" in " ".join(services["longtail"]["healthcheck"]["test"])
    assert "ray-head" in services["longtail"]["depends_on"]
    assert "ray-head" in services["ray-worker"]["depends_on"]


# -- Kubernetes --------------------------------------------------------------------------------------------------
def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def test_kuberay_raycluster():
    objects = by_kind(DEPLOY / "kuberay" / "raycluster.yaml")
    (cluster,) = objects["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values are strings"
    assert containers(head["template"])
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        assert group.get("minReplicas", 0) <= group["replicas"] <= group.get("maxReplicas", group["replicas"])
        assert containers(group["template"])
    claims = {o["metadata"]["name"] for o in objects.get("PersistentVolumeClaim", [])}
    templates = [head["template"]] + [g["template"] for g in groups]
    for template in templates:
        for c in containers(template):
            assert c["image"] and c["resources"]
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "RAY_AUTH_TOKEN" in env
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        shared = [v for v in volumes.values() if "persistentVolumeClaim" in v]
        assert shared and all(v["persistentVolumeClaim"]["claimName"] in claims for v in shared)
        for c in containers(template):
            assert any(m["name"] in volumes for m in c["volumeMounts"])
    (pvc,) = [o for o in objects["PersistentVolumeClaim"] if o["metadata"]["name"] == "longtail-shared"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_kubernetes_service_manifest():
    objects = by_kind(DEPLOY / "kuberay" / "longtail.yaml")
    (deployment,) = objects["Deployment"]
    (service,) = objects["Service"]
    secrets = {o["metadata"]["name"]: o for o in objects["Secret"]}
    cluster = by_kind(DEPLOY / "kuberay" / "raycluster.yaml")["RayCluster"][0]
    claims = {
        o["metadata"]["name"]
        for path in (DEPLOY / "kuberay").glob("*.yaml")
        for o in by_kind(path).get("PersistentVolumeClaim", [])
    }

    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items(), "the Deployment's selector must match its pod labels"
    assert service["spec"]["selector"].items() <= labels.items(), "the Service must select the Deployment's pods"

    (container,) = containers(template)
    port_names = {p.get("name") for p in container["ports"]}
    port_numbers = {p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert target in port_names or target in port_numbers
    env = {e["name"]: e for e in container["env"]}
    head_svc = f"{cluster['metadata']['name']}-head-svc"
    assert env["LONGTAIL_RAY_ADDRESS"]["value"] == f"{head_svc}:6379"
    assert env["LONGTAIL_RAY_DASHBOARD_URL"]["value"] == f"http://{head_svc}:8265"
    assert env["LONGTAIL_HOST"]["value"] == "0.0.0.0"
    svc_port = service["spec"]["ports"][0]["port"]
    assert env["LONGTAIL_PUBLIC_URL"]["value"] == f"http://{service['metadata']['name']}:{svc_port}"
    assert str(svc_port) == env["LONGTAIL_PORT"]["value"]
    token_ref = env["LONGTAIL_API_TOKENS"]["valueFrom"]["secretKeyRef"]
    assert token_ref["key"] in secrets[token_ref["name"]]["stringData"]
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            assert v["persistentVolumeClaim"]["claimName"] in claims
    # The storage path is on the volume the Ray pods share.
    shared_mount = next(
        m["mountPath"]
        for m in container["volumeMounts"]
        if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == "longtail-shared"
    )
    assert env["LONGTAIL_STORAGE_PATH"]["value"].startswith(shared_mount + "/")
    ray_mounts = {
        m["mountPath"] for c in containers(cluster["spec"]["headGroupSpec"]["template"]) for m in c["volumeMounts"]
    }
    assert shared_mount in ray_mounts


# -- docs --------------------------------------------------------------------------------------------------------
def test_readme_covers_the_cluster():
    text = (DEPLOY / "README.md").read_text()
    for needle in (
        "ray start --head --port=6379 --dashboard-host=127.0.0.1",
        "ray start --address=",
        "RAY_AUTH_MODE=token",
        "LONGTAIL_STORAGE_PATH",
        "LONGTAIL_RAY_ADDRESS",
        "LONGTAIL_RAY_DASHBOARD_URL",
        "LONGTAIL_API_TOKENS",
        "LONGTAIL_DATA_ROOT",
        "ray stop",
    ):
        assert needle in text, needle
