"""deploy/ checked statically (no Docker engine or cluster here): schemas, paths, commands, settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import tomllib
import yaml
from dockerfile_parse import DockerfileParser

from lineage.cli import main
from lineage.settings import SETTINGS, Settings

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"
ENV_NAMES = {s.env for s in SETTINGS}


def resolve(group: click.Group, args: list[str]) -> click.Command:
    """The command ``args`` names, its options parsed strictly (an unknown option or a bad value raises)."""
    ctx = click.Context(group, info_name=group.name)
    cmd: click.Command = group
    args = list(args)
    while isinstance(cmd, click.Group):
        assert args, f"{cmd.name} needs a subcommand"
        name = args.pop(0)
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"no command {name!r} under {cmd.name}"
        cmd = sub
    cmd.make_context(cmd.name, args)
    return cmd


def ray_cli() -> click.Group:
    pytest.importorskip("ray", reason="Ray is the [ray] extra; CI installs it")
    from ray.scripts.scripts import cli

    return cli  # type: ignore[no-any-return]


def check_command(entrypoint: list[str], command: list[str]) -> None:
    argv = entrypoint + command
    if argv[0] == "lineage":
        resolve(main, argv[1:])
    elif argv[0] == "ray":
        resolve(ray_cli(), argv[1:])
    else:
        raise AssertionError(f"unknown program {argv[0]!r}")


def check_env(env: dict[str, str]) -> None:
    """Every LINEAGE_* variable is a documented setting and its value (placeholders filled) is valid."""
    for k in env:
        if k.startswith("LINEAGE_"):
            assert k in ENV_NAMES, f"{k} is not a setting"
    filled = {k: re.sub(r"\$\{[^}]*\}", "x", str(v)) for k, v in env.items()}
    Settings.from_env({**filled, "LINEAGE_HOME": "/tmp/nonexistent-lineage-home"})


def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DEPLOY / "Dockerfile"))


def exec_form(value: str) -> list[str]:
    return list(json.loads(value))


def test_dockerfile_copies_every_package_and_runs_real_commands() -> None:
    df = dockerfile()
    copied: set[str] = set()
    for ins in df.structure:
        if ins["instruction"] == "COPY":
            *srcs, _ = ins["value"].split()
            for src in srcs:
                assert (ROOT / src).exists(), f"COPY {src}: no such path in the build context"
                copied.add(src.rstrip("/"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"packages the install needs but the image lacks: {packages - copied}"
    ignored = {line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not ignored & copied, f"copied but ignored: {ignored & copied}"
    args = {i["value"].split("=")[0]: i["value"].split("=", 1)[1] for i in df.structure
            if i["instruction"] == "ARG" and "=" in i["value"]}
    assert args["TORCH_VERSION"] in (ROOT / ".ci" / "run").read_text()  # the torch CI tests is the image's
    assert set(args["EXTRAS"].split(",")) <= set(project["project"]["optional-dependencies"])
    assert args["TORCH_INDEX"].startswith("https://download.pytorch.org/whl/")
    ep = exec_form(next(i["value"] for i in df.structure if i["instruction"] == "ENTRYPOINT"))
    cmd = exec_form(next(i["value"] for i in df.structure if i["instruction"] == "CMD"))
    check_command(ep, cmd)
    health = next(i["value"] for i in df.structure if i["instruction"] == "HEALTHCHECK")
    check_command(exec_form(health.split("CMD", 1)[1].strip()), [])
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(i["value"] for i in df.structure if i["instruction"] == "ENV")))
    check_env(env)
    assert df.baseimage.startswith("python:")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text()))


def test_compose_file_is_valid_and_every_service_is_real() -> None:
    doc = compose()
    schema = json.loads((DEPLOY / "schema" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(doc)
    services = doc["services"]
    assert {"neo4j", "lineage-service", "ray-head", "ray-gpu-worker"} <= set(services)
    assert services["neo4j"]["image"].startswith("neo4j:5.")
    assert services["ray-gpu-worker"]["profiles"] == ["gpu"]
    assert services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    ep = exec_form(next(i["value"] for i in dockerfile().structure if i["instruction"] == "ENTRYPOINT"))
    for name, svc in services.items():
        if "build" in svc:
            ctx = (DEPLOY / svc["build"]["context"]).resolve()
            assert (ctx / svc["build"]["dockerfile"]).is_file(), name
            args = svc["build"].get("args", {})
            assert set(args) <= {i["value"].split("=")[0] for i in dockerfile().structure if i["instruction"] == "ARG"}
            check_command(svc.get("entrypoint", ep), svc.get("command", []))
            check_env(svc.get("environment", {}))
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
    env = services["lineage-service"]["environment"]
    assert env["LINEAGE_GRAPH"] == "bolt://neo4j:7687" and env["RAY_ADDRESS"].startswith("ray-head:")


def test_kuberay_example_matches_the_raycluster_crd() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kuberay" / "raycluster.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"RayCluster", "Deployment", "PersistentVolumeClaim"}
    rc = kinds["RayCluster"]
    assert rc["apiVersion"] == "ray.io/v1"
    jsonschema.Draft7Validator(json.loads((DEPLOY / "schema" / "raycluster-v1.schema.json").read_text())).validate(rc)
    ray_version = next(i["value"].split("=", 1)[1] for i in dockerfile().structure
                       if i["instruction"] == "ARG" and i["value"].startswith("RAY_VERSION="))
    assert rc["spec"]["rayVersion"] == ray_version
    gpu = rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    dep = kinds["Deployment"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"  # one scheduler per home
    [c] = dep["spec"]["template"]["spec"]["containers"]
    check_command(["lineage"], c["args"])
    env = {e["name"]: e.get("value", "${secret}") for e in c["env"]}
    check_env(env)
    assert env["LINEAGE_WORKERS"] == f"ray://{rc['metadata']['name']}-head-svc:10001"  # KubeRay's head service
    claim = dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"]
