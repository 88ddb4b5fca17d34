"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine here): the file
parses, images are pinned, dependencies exist and are waitable, every mounted file is in the
repository, the commands are valid for our own CLI, Prometheus's config passes `promtool`, and
only Grafana is reachable from beyond the host.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import build_parser
from tests.support import require_binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PINNED = re.compile(r"^[\w./-]+:v?\d+(\.\d+)+[\w.-]*$")
EXPORTER_IMAGE = "accounting-sync-exporter"


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(v.split(":")[:2]) for v in service.get("volumes", [])]  # type: ignore[misc]


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = service.get("depends_on", {})
    return {name: {} for name in raw} if isinstance(raw, list) else raw


def _expand(text: str) -> list[str]:
    """Every value a ${VAR:-default} reference can take with the defaults the repo ships."""
    match = re.search(r"\$\{(\w+):-([^}]*)\}", text)
    if not match:
        return [text]
    variants = {"PROMETHEUS_CONFIG": ["prometheus.yml", "prometheus-remote-write.yml"]}
    values = variants.get(match.group(1), [match.group(2)])
    return [text.replace(match.group(0), value) for value in values]


def test_every_service_has_a_pinned_image_or_a_build():
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        image = service.get("image", "")
        if "build" in service:
            assert image.startswith(EXPORTER_IMAGE), (name, image)
        assert PINNED.match(image), f"{name}: image {image!r} is not pinned to a version"
        assert not image.endswith(":latest")


def test_dependencies_exist_and_can_be_waited_for():
    for name, service in SERVICES.items():
        for target, spec in _depends_on(service).items():
            assert target in SERVICES, f"{name} depends on missing service {target}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target] or "build" in SERVICES[target], target
            if condition == "service_completed_successfully":
                assert SERVICES[target].get("restart") == "no", f"{target} is not a one-shot"
            if "profiles" in SERVICES[target] and "profiles" not in service:
                assert spec.get("required") is False, f"{name} needs optional {target}"


def test_long_running_services_have_healthchecks():
    for name, service in SERVICES.items():
        if service.get("restart") != "no":
            assert "healthcheck" in service, f"{name} has no healthcheck"


def test_every_mounted_file_exists_in_the_repository():
    declared = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        for source, _target in _volumes(service):
            if source.startswith("."):
                for path in _expand(source):
                    assert (ROOT / path).exists(), f"{name} mounts missing {path}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    # Files chosen inside a mounted directory by a command-line flag exist too.
    for arg in SERVICES["prometheus"]["command"]:
        if arg.startswith("--config.file=/etc/prometheus/"):
            for variant in _expand(arg):
                assert (ROOT / "deploy/prometheus" / variant.rsplit("/", 1)[1]).is_file()


def test_grafana_mounts_match_the_provisioning_and_its_variables_are_set():
    grafana = SERVICES["grafana"]
    targets = {target: source for source, target in _volumes(grafana)}
    provider = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/accounting-sync.yml").read_text()
    )["providers"][0]
    assert targets[provider["options"]["path"]] == "./grafana/dashboards"
    datasources = "\n".join(
        line.split("#")[0]
        for line in (ROOT / "grafana/provisioning/datasources/accounting-sync.yml")
        .read_text()
        .splitlines()
    )
    needed = set(re.findall(r"\$\{(\w+)\}", datasources))
    provided = set(grafana["environment"]) | set(re.findall(r"(\w+)=", grafana["entrypoint"][-1]))
    assert needed <= provided, needed - provided


def _exporter_commands() -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    for name, service in SERVICES.items():
        if "build" not in service or not service.get("command"):
            continue
        command = service["command"]
        if service.get("entrypoint", [None])[0] == "/bin/sh":
            found[name] = [
                shlex.split(part)[1:] for part in command[0].split("&&")
            ]  # drop the program name
        else:
            found[name] = [command]
    return found


def test_the_exporter_commands_are_valid_for_this_cli():
    commands = _exporter_commands()
    assert {"migrate", "exporter", "demo-pipeline", "tenant-setup"} <= set(commands)
    parser = build_parser()
    for name, argvs in commands.items():
        for argv in argvs:
            args = parser.parse_args(argv)  # a bad flag raises a one-line UsageError
            assert args.command, name


def test_the_exporter_runs_as_the_read_only_role_and_tenant_side_uses_the_proxy_header():
    serve = build_parser().parse_args(SERVICES["exporter"]["command"])
    assert "accounting_sync_exporter@" in getattr(serve, "database.url")
    migrate = _exporter_commands()["migrate"]
    assert migrate[1][:2] == ["db", "reader-role"]
    assert migrate[1][migrate[1].index("--role") + 1] == "accounting_sync_exporter"
    proxy = SERVICES["prom-label-proxy"]["command"]
    assert "-label=org" in proxy
    header = next(a.split("=", 1)[1] for a in proxy if a.startswith("-header-name="))
    setup = build_parser().parse_args(SERVICES["tenant-setup"]["command"])
    assert setup.proxy_header == header
    assert setup.proxy_url.startswith("http://prom-label-proxy:")


def test_only_grafana_is_reachable_from_beyond_this_host():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            if name != "grafana":
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
    assert COMPOSE["networks"]["backend"].get("internal") is True
    for name in ("postgres", "exporter", "prom-label-proxy"):
        assert SERVICES[name].get("networks") == ["backend"], name
        assert "ports" not in SERVICES[name]


def _prometheus_config_with_repo_paths(config: Path, tmp_path: Path) -> Path:
    """The compose config with container paths replaced by the repository's mounted paths."""
    text = config.read_text()
    for source, target in _volumes(SERVICES["prometheus"]):
        if source.startswith("./alerting"):
            text = text.replace(target, str(ROOT / source))
    copy = tmp_path / config.name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-remote-write.yml"])
def test_prometheus_config_and_the_rules_it_loads_pass_promtool(name, tmp_path):
    promtool = require_binary("promtool")
    config = _prometheus_config_with_repo_paths(ROOT / "deploy/prometheus" / name, tmp_path)
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    if list((ROOT / "alerting/rules").glob("*.yml")):
        assert "rule" in result.stdout.lower(), "no rule file was loaded"
    parsed = yaml.safe_load(config.read_text())
    assert [job["job_name"] for job in parsed["scrape_configs"]] == ["accounting-sync-exporter"]


def test_the_remote_write_config_differs_only_by_remote_write():
    plain = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    remote = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-remote-write.yml").read_text())
    assert remote.pop("remote_write")[0]["url"].startswith("http://victoriametrics:")
    assert remote == plain


def _stages(dockerfile: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in dockerfile.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([])
        if line and not line.startswith("#") and stages:
            stages[-1].append(line)
    return stages


def test_the_dockerfile_pins_its_base_and_runs_as_a_non_root_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = _stages(dockerfile)
    for stage in stages:
        image = stage[0].split()[1]
        assert PINNED.match(image), image
    final = stages[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert not any("gcc" in line or "build-essential" in line for line in final)
    # Only what the image needs reaches the build context.
    ignored = (ROOT / ".dockerignore").read_text().split()
    for heavy in (".git", ".venv", "tests"):
        assert heavy in ignored
    for needed in ("exporter", "README.md", "pyproject.toml", "grafana"):
        assert needed not in ignored


def test_the_secrets_init_script_writes_what_the_services_read(tmp_path):
    python = shutil.which("python3") or "python3"
    script = ROOT / "deploy/init_secrets.py"
    source = script.read_text().replace("os.chown(tenants, 10001, 10001)", "pass")
    patched = tmp_path / "init_secrets.py"
    patched.write_text(source)
    out = tmp_path / "secrets"
    for _ in range(2):
        subprocess.run([python, str(patched), str(out)], check=True, timeout=30)
        if _ == 0:
            first = {p.name: p.read_text() for p in out.iterdir() if p.is_file()}
    assert {p.name: p.read_text() for p in out.iterdir() if p.is_file()} == first
    read = set()
    for service in SERVICES.values():
        text = yaml.safe_dump(service)
        read |= set(re.findall(r"/run/secrets/([\w-]+)", text))
    assert read - {"tenants"} <= set(first), read - set(first)


def test_healthchecks_of_the_exporter_image_use_its_own_probe_command():
    """The probe follows the exporter's configuration (port, TLS) and needs no credentials,
    unlike a hard-coded http://127.0.0.1:9839 URL."""
    parser = build_parser()
    for name, service in SERVICES.items():
        if "build" not in service or "healthcheck" not in service:
            continue
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "accounting-sync-exporter", "healthcheck"], name
        probe = parser.parse_args(test[2:])
        served = parser.parse_args(service["command"])
        # The same address the service serves on.
        assert getattr(probe, "web.listen_address") == getattr(served, "web.listen_address")
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = dockerfile.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK"))
    healthcheck = lines[start + 1]  # the CMD on its continuation line
    assert healthcheck.strip().startswith("CMD [")
    assert '"accounting-sync-exporter", "healthcheck"' in healthcheck
    assert "9839" not in healthcheck


def test_the_pipeline_gets_a_writer_role_that_owns_nothing():
    migrate = _exporter_commands()["migrate"]
    writer = [argv for argv in migrate if argv[:2] == ["db", "writer-role"]]
    assert len(writer) == 1
    assert writer[0][writer[0].index("--role") + 1] == "accounting_sync_pipeline"
    assert "/run/secrets/pipeline-password" in writer[0]
