"""deploy/ against the code: the compose file, its load balancer config and the Dockerfile
cannot be run here (no images can be pulled), so each promise they make is checked against
what the code accepts: every service's settings load, the commands are real CLI commands,
the load balancer checks a real route of both API instances, and the topology is the one
the README describes (3 valkey masters with a replica each, 2 API instances, 2 workers)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.routing import Route

from app import create_app
from strictgate.cli import build_parser
from strictgate.settings import ENV_VARS, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
IMAGE = "strictgate:local"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def env_example() -> dict[str, str]:
    """The variables deploy/.env.example defines (what an operator copies to deploy/.env)."""
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """``value`` with compose's interpolation applied (``$$`` is a literal ``$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if name in variables and (variables[name] or not (op or "").startswith(":")):
            return variables[name]
        if op is not None and op.endswith("-"):
            return arg
        raise AssertionError(f"{COMPOSE.name} needs {name}, which deploy/.env.example lacks")

    parts = value.split("$$")
    return "$".join(_VARIABLE.sub(substitute, part) for part in parts)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as compose reads it, with .env.example's values."""
    loaded = interpolate(yaml.safe_load(COMPOSE.read_text()), env_example())
    assert isinstance(loaded, dict)
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services by name."""
    return dict(compose["services"])


def strictgate_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the strictgate image."""
    return {name: s for name, s in services(compose).items() if s.get("image") == IMAGE}


def by_command(compose: dict[str, Any], command: str) -> dict[str, dict[str, Any]]:
    """The strictgate services that run ``strictgate <command>``."""
    return {name: s for name, s in strictgate_services(compose).items()
            if s["command"][0] == command}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuation lines joined."""
    joined: list[str] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(pending.strip())
            pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def image_env() -> dict[str, str]:
    """The ENV the Dockerfile sets (every container of the image starts with it)."""
    env: dict[str, str] = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def container_env(service: dict[str, Any]) -> dict[str, str]:
    """What a strictgate container's process sees: the image's ENV, then the service's."""
    return {**image_env(), **{k: str(v) for k, v in service.get("environment", {}).items()}}


def settings_of(service: dict[str, Any]) -> Settings:
    """The service's settings, loaded as ``strictgate`` loads them at start."""
    return load_settings(container_env(service))


def test_every_variable_of_the_compose_file_is_in_env_example_and_used() -> None:
    text = COMPOSE.read_text()
    used = {m["name"] for m in _VARIABLE.finditer(text)}
    required = {m["name"] for m in _VARIABLE.finditer(text) if not (m["op"] or "").endswith("-")}
    assert required <= set(env_example())
    assert set(env_example()) <= used


def test_every_strictgate_setting_is_known_and_loads(compose: dict[str, Any]) -> None:
    assert len(strictgate_services(compose)) == 4
    for name, service in strictgate_services(compose).items():
        env = container_env(service)
        ours = {k for k in env if k.startswith(("STRICTGATE_", "AWS_")) or k == "REDIS_URL"}
        assert ours <= set(ENV_VARS), (name, ours - set(ENV_VARS))
        settings = settings_of(service)  # raises SettingsError on a malformed value
        assert settings.redis_cluster and settings.redis_wait_replicas == 1, name
        assert settings.lake_catalog is not None and settings.lake_catalog.startswith("postgres:")
        assert settings.lake_data_path is not None and settings.lake_data_path.startswith("s3://")
        # read only with an s3:// data path: present, so the worker can write
        assert settings.aws_access_key_id and settings.aws_secret_access_key, name
        assert (settings.s3_endpoint, settings.s3_use_ssl) == ("seaweedfs:8333", False)


def test_api_instances_and_workers_share_their_secrets(compose: dict[str, Any]) -> None:
    loaded = [settings_of(s) for s in strictgate_services(compose).values()]
    assert {(s.admin_token, s.jwt_secret) for s in loaded} == {
        (env_example()["STRICTGATE_ADMIN_TOKEN"], env_example()["STRICTGATE_JWT_SECRET"])}


def test_two_api_instances_of_two_processes_without_a_worker(compose: dict[str, Any]) -> None:
    apis = by_command(compose, "serve")
    assert sorted(apis) == ["api-1", "api-2"]
    for service in apis.values():
        settings = settings_of(service)
        assert settings.api_processes == 2 and not settings.run_worker
        assert settings.host == "0.0.0.0"


def test_two_workers_share_the_usage_ledger_volume(compose: dict[str, Any]) -> None:
    workers = by_command(compose, "worker")
    assert sorted(workers) == ["worker-1", "worker-2"]
    # quota/flush.py: every flusher of one Redis takes turns on one ledger file
    mounts = {tuple(v.split(":")[:2]) for w in workers.values() for v in w["volumes"]}
    data_dirs = {str(settings_of(w).data_dir) for w in workers.values()}
    assert len(mounts) == 1 and {target for _, target in mounts} == data_dirs


def test_commands_are_real_cli_commands(compose: dict[str, Any]) -> None:
    entrypoint = [args for instruction, args in dockerfile_instructions()
                  if instruction == "ENTRYPOINT"]
    assert entrypoint == ['["strictgate"]']
    parser = build_parser()
    for name, service in strictgate_services(compose).items():
        args = parser.parse_args(service["command"])  # an unknown option exits (status 2)
        assert args.command in ("serve", "worker"), name


def test_healthchecks_ask_the_processes_real_endpoints(compose: dict[str, Any]) -> None:
    for name, service in strictgate_services(compose).items():
        probe = " ".join(service["healthcheck"]["test"])
        if service["command"][0] == "serve":
            expected = f"http://127.0.0.1:{settings_of(service).port}/readyz"
        else:
            args = build_parser().parse_args(service["command"])
            expected = f"http://127.0.0.1:{args.metrics_port}/metrics"
        assert expected in probe, name


def test_three_masters_with_a_replica_each(compose: dict[str, Any]) -> None:
    nodes = {name: s for name, s in services(compose).items()
             if "valkey-server" in " ".join(s.get("command", []))}
    assert len(nodes) == 6
    for name, node in nodes.items():
        command = " ".join(node["command"])
        for flag in ("--cluster-enabled yes", "--appendonly yes", "--appendfsync always",
                     "--cluster-node-timeout 5000"):
            assert flag in command, (name, flag)
    assert len({v for n in nodes.values() for v in n["volumes"]}) == 6  # one disk each
    init = [s for s in services(compose).values()
            if "--cluster create" in " ".join(s.get("command", []))]
    assert len(init) == 1
    script = " ".join(init[0]["command"])
    created = re.search(r"--cluster create ((?:[\d.]+:6379\s+)+)--cluster-replicas (\d+)",
                        script)
    assert created is not None
    # each node by its fixed address (a cluster finds its peers again by address)
    address = {n["networks"]["default"]["ipv4_address"]: name for name, n in nodes.items()}
    assert sorted(address.get(a.split(":")[0], a) for a in created[1].split()) == sorted(nodes)
    per_master = int(created[2])
    assert per_master == 1 and len(nodes) // (1 + per_master) == 3
    assert {n for n, c in init[0]["depends_on"].items()
            if c["condition"] == "service_healthy"} == set(nodes)
    for service in strictgate_services(compose).values():
        host = re.search(r"@([\w-]+):", settings_of(service).redis_url or "")
        assert host is not None and host[1] in nodes
        assert service["depends_on"]["valkey-init"]["condition"] == (
            "service_completed_successfully")


def haproxy_sections(text: str) -> dict[str, list[str]]:
    """``<keyword> <name>`` (or ``global``/``defaults``) -> its lines, comments dropped."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = sections.setdefault(line.strip(), [])
        else:
            current.append(line.strip())
    return sections


def test_the_load_balancer_checks_and_routes_to_both_apis(compose: dict[str, Any],
                                                          tmp_path: Path) -> None:
    balancers = [s for s in services(compose).values() if "haproxy" in s["image"]]
    assert len(balancers) == 1
    mount = next(v for v in balancers[0]["volumes"] if "haproxy.cfg" in v)
    config = (DEPLOY / mount.split(":")[0]).resolve()
    sections = haproxy_sections(config.read_text())
    frontend = next(lines for key, lines in sections.items() if key.startswith("frontend "))
    port = next(line.split()[1].rsplit(":", 1)[1] for line in frontend if line.startswith("bind"))
    assert any(p.endswith(f":{port}") for p in balancers[0]["ports"])
    backend_name = next(line.split()[1] for line in frontend
                        if line.startswith("default_backend"))
    backend = sections[f"backend {backend_name}"]
    servers = [line.split() for line in backend if line.startswith("server ")]
    apis = by_command(compose, "serve")
    assert {s[2] for s in servers} == {f"{n}:{settings_of(a).port}" for n, a in apis.items()}
    assert all("check" in s[3:] for s in servers)
    check = next(line.split() for line in backend if line.startswith("option httpchk"))
    method, path = check[2], check[3]
    # the route, in the app the API instances serve (built from their own settings)
    api = next(iter(apis.values()))
    settings = load_settings({**container_env(api), "STRICTGATE_DATA_DIR": str(tmp_path)})
    routes = [r for r in create_app(settings).routes if isinstance(r, Route) and r.path == path]
    assert any(method in (r.methods or ()) for r in routes), path
    assert "http-check expect status 200" in backend
    assert {n for n, c in balancers[0]["depends_on"].items()
            if c["condition"] == "service_healthy"} == set(apis)


def test_the_image_installs_the_repository_with_the_pinned_versions() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    assert "pip install -c constraints.txt ." in runs
    for instruction, args in instructions:
        if instruction == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker binary here")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                             check=False)
    if version.returncode != 0:
        said = (version.stderr or version.stdout).strip().splitlines() or [""]
        pytest.skip(f"`docker compose` is not available here: {said[0][:200]}")
    done = subprocess.run([docker, "compose", "-f", str(COMPOSE), "--env-file",
                           str(ENV_EXAMPLE), "config", "--quiet"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
