"""deploy/: every YAML file parses; every command line in the Dockerfile, the compose file, the
Kubernetes manifests and the systemd units is one the product's CLI (or Celery's, over the
product's app and queues) accepts; every ROLLOUT_* variable they set is a setting; and the
tools that can judge a file (systemd-analyze, docker compose, haproxy) accept it where they are
installed. The commands and settings are read from the code, never listed here."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml

from rollout import config
from rollout.queues import QUEUES

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
HAPROXY = DEPLOY / "haproxy" / "rollout-mdm.cfg"
IMAGE_ENTRYPOINT_FALLBACK = ["rollout"]
VARIABLE = re.compile(r"\bROLLOUT_[A-Z0-9_]+\b")
# What is not a setting of rollout.config but is read elsewhere: the dev/test tooling's own.
NOT_SETTINGS = frozenset({"ROLLOUT_IMAGE", "ROLLOUT_WEB_BIND"})


# ---- what the code says ------------------------------------------------------------------


def setting_variables() -> set[str]:
    """``<prefix><FIELD>`` of every field of Settings, plus the ``_FILE`` variants and the
    settings file variable when config.py has them."""
    prefix = str(config.Settings.model_config.get("env_prefix", ""))
    names = {f"{prefix}{field.upper()}" for field in config.Settings.model_fields}
    suffix = str(getattr(config, "FILE_SUFFIX", "_FILE"))
    for field in getattr(config, "FILE_SETTINGS", ()):
        names.add(f"{prefix}{str(field).upper()}{suffix}")
    extra = getattr(config, "CONFIG_FILE_VARIABLE", None)
    if isinstance(extra, str):
        names.add(extra)
    return names


def rollout_cli() -> Any:
    """The ``rollout`` command as typer builds it (a group of groups and commands)."""
    from rollout.cli import app

    return typer.main.get_command(app)


def check_rollout_command(args: list[str], where: str) -> str:
    """``args`` (after ``rollout``) name a command of the typer app and parse; its path."""
    command = rollout_cli()
    path: list[str] = []
    rest = list(args)
    while hasattr(command, "commands"):
        assert rest, f"{where}: `rollout {' '.join(args)}` names a group, not a command"
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, (
            f"{where}: `rollout {' '.join(args)}`: no command {name!r} "
            f"(known: {', '.join(sorted(command.commands))})"
        )
        command, path = sub, [*path, name]
    try:
        command.make_context(" ".join(["rollout", *path]), rest)
    except typer.TyperException as exc:
        raise AssertionError(
            f"{where}: `rollout {' '.join(args)}`: {exc.format_message()}"
        ) from None
    return " ".join(path)


def check_celery_command(args: list[str], where: str) -> str:
    """``args`` (after ``celery``) use the product's app, a real subcommand, known options and
    the product's queues; the subcommand."""
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery

    from workers.app import app

    line = f"celery {' '.join(args)}"
    assert args[:2] == ["-A", "workers.app"], f"{where}: `{line}` must use -A workers.app"
    name, rest = args[2], args[3:]
    assert name in celery.commands, f"{where}: `{line}`: celery has no command {name!r}"
    obj = CLIContext(app=app, no_color=True, workdir=None)
    try:
        ctx = celery.commands[name].make_context(f"celery {name}", rest, obj=obj)
    except click.ClickException as exc:
        raise AssertionError(f"{where}: `{line}`: {exc.format_message()}") from None
    if name == "worker":
        queues = ctx.params.get("queues") or []
        assert queues, f"{where}: `{line}`: a worker names its queues (-Q)"
        for queue in queues:
            if "%" in queue:  # a systemd specifier: the instance, checked by the units' test
                continue
            assert queue in QUEUES, f"{where}: `{line}`: {queue!r} is not one of {QUEUES}"
    return name


def check_command(argv: list[str], where: str) -> tuple[str, str] | None:
    """A ``rollout`` or ``celery`` command line checked; (program, subcommand), or None for
    another program."""
    program = Path(argv[0]).name
    if program == "rollout":
        return program, check_rollout_command(argv[1:], where)
    if program == "celery":
        return program, check_celery_command(argv[1:], where)
    return None


def shell_commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (split on ; && || |), redirections dropped."""
    for part in re.split(r"&&|\|\||;|\|", script):
        words = [w for w in shlex.split(part) if not re.match(r"^\d*[<>]", w)]
        if words:
            yield words


# ---- what the files say ------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def dockerfile_instruction(name: str) -> list[str]:
    """The exec (JSON) form of a Dockerfile instruction such as ENTRYPOINT."""
    found = re.findall(rf"^{name}\s+(\[.*\])\s*$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert found, f"deploy/Dockerfile has no {name} in exec form"
    words = json.loads(found[-1])
    assert isinstance(words, list)
    return [str(w) for w in words]


def image_entrypoint() -> list[str]:
    return dockerfile_instruction("ENTRYPOINT")


def compose_commands() -> Iterator[tuple[str, list[str]]]:
    """Each service's command line (the image's entrypoint unless it has its own), and its
    health check's commands, for services built from deploy/Dockerfile."""
    for name, service in compose()["services"].items():
        if "build" not in service:
            continue
        entrypoint = service.get("entrypoint", image_entrypoint())
        command = service.get("command", dockerfile_instruction("CMD"))
        yield f"compose {name}", [*entrypoint, *command]
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test and test[0] == "CMD-SHELL":
            for words in shell_commands(test[1].replace("$$", "$")):
                yield f"compose {name} healthcheck", words


def kubernetes_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object under deploy/kubernetes (kustomization.yaml is not one)."""
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "metadata" in doc:
                yield path.name, doc


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    template = spec.get("jobTemplate", {}).get("spec", spec).get("template", {})
    pod = template.get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def kubernetes_commands() -> Iterator[tuple[str, list[str]]]:
    for file, doc in kubernetes_documents():
        for container in pod_containers(doc):
            if "rollout" not in str(container.get("image", "")):
                continue
            where = f"{file} {doc['metadata']['name']}/{container['name']}"
            command = container.get("command", image_entrypoint())
            yield where, [*command, *container.get("args", [])]
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                argv = (container.get(probe) or {}).get("exec", {}).get("command")
                if argv and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
                    yield from ((f"{where} {probe}", w) for w in shell_commands(argv[2]))
                elif argv:
                    yield f"{where} {probe}", list(argv)


def unit_files() -> list[Path]:
    return sorted(SYSTEMD.glob("*.service"))


def unit_values(path: Path, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", path.read_text(), flags=re.MULTILINE)


def systemd_commands() -> Iterator[tuple[str, list[str]]]:
    for path in unit_files():
        for line in unit_values(path, "ExecStart"):
            argv = shlex.split(line.lstrip("-@:+!"))
            # ${VAR} is filled from the unit's environment; %i is the instance (a queue)
            yield path.name, [w.replace("${WORKER_CONCURRENCY}", "2") for w in argv]


def all_commands() -> list[tuple[str, list[str]]]:
    return [
        ("Dockerfile", [*image_entrypoint(), *dockerfile_instruction("CMD")]),
        *compose_commands(),
        *kubernetes_commands(),
        *systemd_commands(),
    ]


def set_variables() -> Iterator[tuple[str, str]]:
    """Every ROLLOUT_* variable a deployment file sets (where, name)."""
    for name, service in compose()["services"].items():
        env = service.get("environment") or {}
        keys = env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        for key in keys:
            yield f"compose {name}", str(key)
    for file, doc in kubernetes_documents():
        if doc.get("kind") in ("ConfigMap", "Secret"):
            for key in (*doc.get("data", {}), *doc.get("stringData", {})):
                if VARIABLE.fullmatch(str(key)):
                    yield f"{file} {doc['metadata']['name']}", str(key)
        for container in pod_containers(doc):
            for item in container.get("env", []):
                yield f"{file} {container['name']}", str(item["name"])
    for path in [*unit_files(), DEPLOY / "rollout.env.example"]:
        for line in path.read_text().splitlines():
            match = re.match(r"^(?:Environment=)?#?\s*(ROLLOUT_[A-Z0-9_]+)=", line)
            if match:
                yield path.name, match.group(1)
    yield from (
        ("Dockerfile", v) for v in re.findall(r"\b(ROLLOUT_[A-Z0-9_]+)=", DOCKERFILE.read_text())
    )


# ---- the tests ---------------------------------------------------------------------------


def test_every_yaml_file_under_deploy_parses() -> None:
    files = yaml_files()
    assert COMPOSE in files and len(files) >= 10, files
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path.relative_to(REPO)} is empty"


def test_every_command_line_is_a_real_command() -> None:
    seen: dict[tuple[str, str], list[str]] = {}
    for where, argv in all_commands():
        checked = check_command(argv, where)
        if checked is not None:
            seen.setdefault(checked, []).append(where)
    # each file format runs the whole product: migrations, the web app, both workers, beat
    for wanted in [("rollout", "db upgrade"), ("rollout", "serve"), ("celery", "worker")]:
        assert wanted in seen, f"no deployment file runs {' '.join(wanted)}: {sorted(seen)}"
    beats = seen.get(("celery", "beat"), [])
    assert any(w.startswith("compose") for w in beats) and any(".yaml" in w for w in beats)
    assert any(w.endswith(".service") for w in beats), beats


def test_a_command_that_does_not_exist_is_caught() -> None:
    # the checks above are not vacuous
    with pytest.raises(AssertionError, match="no command 'sevre'"):
        check_rollout_command(["sevre"], "here")
    with pytest.raises(AssertionError, match="--prot"):
        check_rollout_command(["serve", "--prot", "80"], "here")
    with pytest.raises(AssertionError, match="'pushes' is not one of"):
        check_celery_command(["-A", "workers.app", "worker", "-Q", "pushes"], "here")


def test_every_queue_has_a_worker_in_each_format() -> None:
    def queues(commands: Iterator[tuple[str, list[str]]]) -> set[str]:
        found: set[str] = set()
        for _, argv in commands:
            if Path(argv[0]).name == "celery" and "worker" in argv and "-Q" in argv:
                found.update(argv[argv.index("-Q") + 1].split(","))
        return found

    assert queues(compose_commands()) == set(QUEUES)
    assert queues(kubernetes_commands()) == set(QUEUES)
    # the systemd template takes the queue as its instance
    assert queues(systemd_commands()) == {"%i"}


def test_every_rollout_variable_set_is_a_setting() -> None:
    known = setting_variables()
    assert "ROLLOUT_DATABASE_URL" in known and "ROLLOUT_BROKER_URL" in known
    seen = list(set_variables())
    assert len(seen) > 20, seen
    unknown = [(w, v) for w, v in seen if v.startswith("ROLLOUT_") and v not in known]
    unknown = [(w, v) for w, v in unknown if v not in NOT_SETTINGS]
    assert not unknown, f"not settings of rollout.config.Settings: {unknown}"


def test_the_variables_the_compose_file_interpolates_are_not_settings() -> None:
    # ${ROLLOUT_IMAGE} and ${ROLLOUT_WEB_BIND} are compose's own; they must stay non-settings
    used = set(re.findall(r"\$\{(ROLLOUT_[A-Z0-9_]+)", COMPOSE.read_text()))
    assert used <= NOT_SETTINGS
    assert not (NOT_SETTINGS & setting_variables())


def test_compose_runs_migrations_first_and_exactly_one_beat() -> None:
    services = compose()["services"]
    built = [name for name, s in services.items() if "build" in s]
    assert set(built) == {"migrate", "web", "worker-control", "worker-fanout", "beat"}
    for name in built:
        if name == "migrate":
            continue
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
    for name in ("worker-fanout", "worker-control"):
        assert "container_name" not in services[name] and "ports" not in services[name]
    assert "deploy" not in services["beat"]  # no replicas: one


def test_kubernetes_beat_is_one_replica_recreated() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in kubernetes_documents()}
    beat = docs["Deployment", "rollout-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"
    assert ("HorizontalPodAutoscaler", "rollout-beat") not in docs
    web = pod_containers(docs["Deployment", "rollout-web"])[0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod_containers(docs["Job", "rollout-migrate"])[0]["args"] == ["db", "upgrade"]
    scalers = [d for _, d in kubernetes_documents() if d["kind"] == "ScaledObject"]
    assert [s["spec"]["scaleTargetRef"]["name"] for s in scalers] == ["rollout-worker-fanout"]
    assert scalers[0]["spec"]["triggers"][0]["metadata"]["listName"] in QUEUES


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The units run /opt/rollout/.venv/bin/...; here that does not exist, so each copy runs an
    # executable that does (everything else is verified as written). The template is verified
    # as an instance of each queue.
    binary = shutil.which("true") or "/bin/true"
    units: list[Path] = []
    for path in unit_files():
        text = re.sub(r"/opt/rollout/\.venv/bin/[a-z]+", binary, path.read_text())
        names = (
            [path.name.replace("@.", f"@{q}.") for q in QUEUES]
            if "@." in path.name
            else [path.name]
        )
        for name in names:
            (tmp_path / name).write_text(text)
            units.append(tmp_path / name)
    done = subprocess.run(
        [analyze, "verify", *map(str, units)], capture_output=True, text=True, timeout=30
    )
    # only complaints about our units count (the host's own units may have theirs); a bad key
    # or value is only a warning (exit status 0), so the output is read too
    output = (done.stdout + done.stderr).splitlines()
    ours = [line for line in output if any(unit.name in line for unit in units)]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


def test_the_systemd_units_are_hardened() -> None:
    for path in unit_files():
        text = path.read_text()
        for line in (
            "User=rollout",
            "EnvironmentFile=/etc/rollout/rollout.env",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "RestrictAddressFamilies=",
        ):
            assert line in text, f"{path.name} lacks {line.strip()}"
        assert unit_values(path, "ExecStart")[0].startswith("/opt/rollout/.venv/bin/")
    # only beat writes on disk, to its state directory
    assert "StateDirectory=rollout" in (SYSTEMD / "rollout-beat.service").read_text()


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose (the plugin) is not installed")
    # a copy beside the files an operator makes first (the secrets), so only the file is judged
    folder = tmp_path / "deploy"
    (folder / "secrets").mkdir(parents=True)
    (folder / "etc").mkdir()
    for secret in compose()["secrets"].values():
        (folder / secret["file"]).write_text("placeholder\n")
    shutil.copy(COMPOSE, folder / "compose.yaml")
    done = subprocess.run(
        [docker, "compose", "-f", str(folder / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_haproxy_accepts_its_snippet(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed")
    from rollout.sim.pki import make_ca

    ca = make_ca("deploy test CA")
    pem = tmp_path / "full.pem"
    pem.write_bytes(ca.cert_pem() + ca.key_pem())
    text = HAPROXY.read_text()
    text = text.replace("/etc/rollout/tls/fullchain.pem", str(pem))
    text = text.replace("/etc/rollout/device-ca.pem", str(pem))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("global\n    log stdout format raw local0\n\n" + text)
    done = subprocess.run(
        [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_secret_file_named_is_mounted() -> None:
    # compose: each /run/secrets/NAME a service is told about is a secret it mounts
    data = compose()
    declared = set(data["secrets"])
    for name, service in data["services"].items():
        mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        assert mounted <= declared, name
        for value in (service.get("environment") or {}).values():
            for secret in re.findall(r"/run/secrets/([\w.-]+)", str(value)):
                assert secret in mounted, f"compose {name}: {value} is not mounted"
    # kubernetes: each /etc/rollout/files/KEY the ConfigMap names is a key of the Secret
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in kubernetes_documents()}
    keys = set(docs["Secret", "rollout-files"]["stringData"])
    for value in docs["ConfigMap", "rollout-config"]["data"].values():
        for key in re.findall(r"/etc/rollout/files/([\w.-]+)", str(value)):
            assert key in keys, f"{value}: no key {key!r} in the Secret rollout-files"
    for (kind, _), doc in docs.items():
        for container in pod_containers(doc) if kind in ("Deployment", "Job") else []:
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                wanted = "ConfigMap" if "configMapRef" in source else "Secret"
                assert (wanted, ref["name"]) in docs, ref
