"""Packaging, the ComfyUI entry point, the models CLI, and the engine's small core modules."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restorekit import device as dev
from restorekit.errors import CancelledError, InvalidParameterError
from restorekit.files import atomic_path, atomic_write_bytes, resolve_inside
from restorekit.progress import Reporter

from conftest import REPO_ROOT
from model_factory import (
    pth_bytes,
    safetensors_bytes,
    sha256,
    tiny_entry,
    tiny_state,
    write_registry,
)

# --------------------------------------------------------------------------- packaging


def test_requirements_never_pin_torch() -> None:
    lines = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    names = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower() for line in lines if line}
    assert not names & {"torch", "torchvision", "torchaudio"}
    assert {"spandrel", "safetensors", "huggingface_hub", "facexlib"} <= names


def test_pyproject_declares_a_torch_range_extras_and_comfy_section() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project = data["project"]
    assert project["requires-python"] == ">=3.10"
    torch_req = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert "==" not in torch_req and ">=" in torch_req
    assert {"app", "test"} <= set(project["optional-dependencies"])
    assert {"PublisherId", "DisplayName", "Icon"} <= set(data["tool"]["comfy"])
    assert project["scripts"]["restorekit"] == "restorekit.cli:main"


def test_install_py_installs_requirements_but_never_torch() -> None:
    out = subprocess.run([sys.executable, "install.py", "--dry-run"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    command = out.stdout.strip()
    assert "-m pip install" in command and "spandrel" in command
    assert " torch" not in command and "torchvision" not in command


@pytest.mark.slow
def test_comfyui_style_import_of_the_pack(tmp_path: Path) -> None:
    """ComfyUI loads custom_nodes/<folder>/__init__.py by path under a non-identifier name."""
    script = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location(
    "RestoreKit-main", {str(REPO_ROOT / "__init__.py")!r},
    submodule_search_locations=[{str(REPO_ROOT)!r}])
module = importlib.util.module_from_spec(spec)
sys.modules["RestoreKit-main"] = module
spec.loader.exec_module(module)
assert isinstance(module.NODE_CLASS_MAPPINGS, dict)
assert isinstance(module.NODE_DISPLAY_NAME_MAPPINGS, dict)
import restorekit
print(restorekit.__file__)
assert "comfy" not in sys.modules and "folder_paths" not in sys.modules
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(result.stdout.strip()).resolve() == (REPO_ROOT / "restorekit" / "__init__.py").resolve()


FRONT_END_MODULES = frozenset(
    {"comfy", "comfy_extras", "comfy_execution", "folder_paths", "execution", "server", "gradio", "gradio_client", "nodes", "gradio_app", "restorekit_nodes", "restorekit_gradio"}
)
"""Top-level modules of ComfyUI, Gradio and our own front ends: never imported by the engine."""

DECLARED_FRONT_END_EDGES = {Path("restorekit/frontends.py")}
"""The one engine module allowed to name front ends (the CLI's plugin table)."""

_DYNAMIC_IMPORTERS = {"import_module", "__import__", "find_spec", "spec_from_file_location"}


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module ``source`` imports: import statements, and
    ``importlib.import_module``/``__import__``/``find_spec`` calls with a literal name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in _DYNAMIC_IMPORTERS:
                found.add(node.args[0].value.split(".")[0])
    return found


def test_import_guard_sees_static_and_dynamic_imports() -> None:
    source = "import gradio as gr\nfrom comfy.utils import ProgressBar\nimport importlib\nimportlib.import_module('gradio_app.ui')\n__import__('folder_paths')\n"
    assert imported_modules(source) & FRONT_END_MODULES == {"gradio", "comfy", "gradio_app", "folder_paths"}
    assert imported_modules("from . import nodes\nfrom .faces import detect\n") == set()  # relative: our own modules


def test_engine_never_imports_a_front_end() -> None:
    offenders = []
    for path in sorted((REPO_ROOT / "restorekit").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT)
        if relative in DECLARED_FRONT_END_EDGES:
            continue
        bad = imported_modules(path.read_text(encoding="utf-8")) & FRONT_END_MODULES
        if bad:
            offenders.append(f"{relative}: {', '.join(sorted(bad))}")
    assert not offenders, "the engine imports front ends (declare CLI edges in restorekit/frontends.py):\n" + "\n".join(offenders)


def test_front_end_table_loads_every_front_end() -> None:
    from restorekit.frontends import FRONT_ENDS, load_front_end

    assert load_front_end("nodes", "runner").__name__.endswith(".runner")
    if "app" in FRONT_ENDS and importlib.util.find_spec("gradio") is not None:
        assert hasattr(load_front_end("app", "ui"), "launch")
    with pytest.raises(InvalidParameterError, match="Unknown front end"):
        load_front_end("nope", "ui")


# --------------------------------------------------------------------------- models CLI


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "restorekit", *args], capture_output=True, text=True, env=full_env, timeout=300)


@pytest.mark.slow
def test_models_list_json_and_info() -> None:
    result = run_cli("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["RealESRGAN_x4plus"]["default"] is True
    assert rows["realesr-general-x4v3"]["pair"]["meaning"] == "denoise"
    info = run_cli("models", "info", "realesr-general-x4v3")
    assert info.returncode == 0 and "denoise" in info.stdout and "sources (in order)" in info.stdout


@pytest.mark.slow
def test_models_cli_download_verify_path_import_and_errors(tmp_path: Path, isolated_home: Path) -> None:
    from hub_server import HubServer

    state = tiny_state(seed=21)
    data = pth_bytes(state)
    registry = write_registry(
        tmp_path / "r.yaml",
        {"tiny": tiny_entry([{"kind": "hf", "repo_id": "t/r", "filename": "tiny.pth", "size": len(data), "sha256": sha256(data), "format": "pth"}])},
    )
    with HubServer() as hub:
        hub.add_hub_file("t/r", "tiny.pth", data)
        env = {"RESTOREKIT_REGISTRY": str(registry), "RESTOREKIT_HOME": str(isolated_home), "HF_ENDPOINT": hub.url}
        first = run_cli("models", "download", "tiny", env=env)
        assert first.returncode == 0, first.stderr
        assert "downloaded from hf:t/r/tiny.pth" in first.stdout
        second = run_cli("models", "download", "tiny", env=env)
        assert "already installed" in second.stdout
        assert hub.state.count("GET", "tiny.pth") == 1

        verify = run_cli("models", "verify", env=env)
        assert verify.returncode == 0 and "tiny: ok" in verify.stdout
        path = run_cli("models", "path", "tiny", env=env)
        assert path.returncode == 0 and Path(path.stdout.strip()).is_file()

        # A modified file fails verification.
        installed = Path(path.stdout.strip())
        installed.write_bytes(installed.read_bytes()[:-4] + b"\0\0\0\0")
        bad = run_cli("models", "verify", "tiny", env=env)
        assert bad.returncode == 1 and "modified" in bad.stdout

        own = tmp_path / "own.safetensors"
        own.write_bytes(safetensors_bytes(tiny_state(seed=22)))
        imported = run_cli("models", "import", str(own), "--name", "own-x2", env=env)
        assert imported.returncode == 0, imported.stderr
        assert (isolated_home / "upscale_models" / "own-x2.safetensors").is_file()

        missing = run_cli("models", "download", "nope", env=env)
        assert missing.returncode == 1
        assert missing.stderr.count("\n") == 1 and "not a registry model" in missing.stderr

        offline = run_cli("models", "download", "tiny", "--force", env={**env, "HF_HUB_OFFLINE": "1"})
        assert offline.returncode == 1 and "restorekit models import" in offline.stderr


# --------------------------------------------------------------------------- core modules


def test_device_and_precision_resolution() -> None:
    plan = dev.plan_execution("cpu", "fp32")
    assert plan.device.type == "cpu" and plan.dtype == torch.float32 and plan.channels_last
    auto = dev.plan_execution("cpu", "auto")
    assert auto.dtype == (torch.bfloat16 if dev.cpu_has_fast_bf16() else torch.float32)
    assert dev.plan_execution("cpu", "auto", supports_bfloat16=False).dtype == torch.float32
    with pytest.raises(InvalidParameterError, match="fp16 is not supported on the CPU"):
        dev.plan_execution("cpu", "fp16")
    with pytest.raises(InvalidParameterError, match="does not support bf16"):
        dev.plan_execution("cpu", "bf16", supports_bfloat16=False)
    with pytest.raises(InvalidParameterError, match="Unknown precision"):
        dev.plan_execution("cpu", "int4")
    with pytest.raises(InvalidParameterError, match="upscale networks only"):
        dev.plan_execution("cpu", "int8")  # int8: upscale networks only (allow_int8)
    with pytest.raises(InvalidParameterError, match="Unknown device"):
        dev.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="no CUDA GPU"):
            dev.resolve_device("cuda")
    assert dev.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"))
    assert not dev.is_out_of_memory(RuntimeError("shape mismatch"))


def test_bf16_on_a_cpu_without_bf16_convolutions_warns_once(monkeypatch, caplog) -> None:
    """An explicit bf16 on an AVX2-only CPU runs (emulated, ~7x slower than fp32), with one
    warning that says so and names the fix; auto picks fp32 there."""
    monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: False)
    dev._warn_emulated_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="restorekit.device"):
        assert dev.plan_execution("cpu", "bf16").dtype == torch.bfloat16
        dev.plan_execution("cpu", "bf16")
        assert dev.plan_execution("cpu", "auto").dtype == torch.float32
    warnings = [r.getMessage() for r in caplog.records if "emulates" in r.getMessage()]
    assert len(warnings) == 1 and "use precision auto (fp32 here) or fp32" in warnings[0]
    dev._warn_emulated_bf16.cache_clear()


def test_atomic_writes_leave_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half-writ")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and list(tmp_path.iterdir()) == [target]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_the_next_write_removes_a_killed_writers_temp_file(tmp_path: Path) -> None:
    """A writer killed mid-write (SIGKILL: no cleanup runs) leaves its temp file; the next
    successful write of that target removes it, and leaves other targets' temps alone."""
    import time

    target = tmp_path / "p[1].png"
    stale = tmp_path / ".p[1].k1ll3d.tmp.png"
    other = tmp_path / ".p2.k1ll3d.tmp.png"
    for leftover in (stale, other):
        leftover.write_bytes(b"\x89PNG half")
        os.utime(leftover, (time.time() - 5, time.time() - 5))
    atomic_write_bytes(target, b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, other.name])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_resolve_inside_refuses_escapes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert resolve_inside(tmp_path, "a/b.txt") == (tmp_path / "a" / "b.txt").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(InvalidParameterError):
            resolve_inside(tmp_path, bad)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(InvalidParameterError):
        resolve_inside(tmp_path, "link/passwd")


def test_reporter_steps_stages_and_cancels() -> None:
    seen: list[tuple[int, int, str]] = []
    reporter = Reporter.of(lambda d, t, m: seen.append((d, t, m)))
    reporter.step(1, 2, "tile")
    stage = reporter.stage(1, 2)
    stage.step(5, 10, "half of the second stage")
    assert seen == [(1, 2, "tile"), (1500, 2000, "half of the second stage")]
    flag = {"stop": False}
    cancelling = Reporter.of(None, lambda: flag["stop"])
    cancelling.step(0, 1)
    flag["stop"] = True
    with pytest.raises(CancelledError):
        cancelling.step(1, 1)

    def broken(done: int, total: int, message: str) -> None:
        raise ValueError("display broke")

    Reporter.of(broken).step(0, 1)  # a broken progress display never breaks the job


ENGINE_ENVIRONMENT_MODULE = Path("restorekit/environment.py")


def test_environment_variables_are_read_in_one_module() -> None:
    """Only restorekit/environment.py reads the environment (the CLI may set allocator
    variables for its own process before torch loads)."""
    readers = []
    for path in sorted((REPO_ROOT / "restorekit").rglob("*.py")):
        relative = path.relative_to(REPO_ROOT)
        if relative == ENGINE_ENVIRONMENT_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            reads = (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and isinstance(node.value, ast.Name) and node.value.id == "os")
            if reads and relative != Path("restorekit/cli/common.py"):
                readers.append(f"{relative}:{node.lineno}")
    assert not readers, "read environment variables through restorekit.environment: " + ", ".join(readers)


def test_environment_accessors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from restorekit import environment

    for name in ("RESTOREKIT_HOME", "RESTOREKIT_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "RESTOREKIT_MAX_PIXELS"):
        monkeypatch.delenv(name, raising=False)
    assert environment.home_override() is None and not environment.offline() and environment.max_pixels() is None
    assert environment.hf_endpoint() == "https://huggingface.co"
    monkeypatch.setenv("RESTOREKIT_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "True")
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com/")
    monkeypatch.setenv("RESTOREKIT_MAX_PIXELS", "1e6")
    assert environment.home_override() == tmp_path.resolve() and environment.offline()
    assert environment.hf_endpoint() == "https://hf-mirror.com" and environment.max_pixels() == 1_000_000
    monkeypatch.setenv("RESTOREKIT_MAX_PIXELS", "lots")
    with pytest.raises(InvalidParameterError, match="RESTOREKIT_MAX_PIXELS"):
        environment.max_pixels()


def test_every_private_spandrel_class_we_use_still_exists() -> None:
    """Fails, naming the class, when a spandrel release moves one of its private modules."""
    from restorekit.spandrel_internals import PRIVATE_CLASSES, private_class

    for key, (module_name, class_name) in PRIVATE_CLASSES.items():
        assert isinstance(private_class(key), type), f"spandrel lost {module_name}.{class_name} ({key})"


def test_a_moved_private_spandrel_class_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from restorekit import spandrel_internals
    from restorekit.errors import ModelIncompatibleError

    monkeypatch.setitem(spandrel_internals.PRIVATE_CLASSES, "Gone", ("spandrel.architectures.Gone.__arch.gone_arch", "Gone"))
    with pytest.raises(ModelIncompatibleError, match=r"no longer provides .*Gone.*pip install 'spandrel>=0.4,<0.5'"):
        spandrel_internals.private_class("Gone")


def test_only_the_internals_table_names_private_spandrel_modules() -> None:
    users = [
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "restorekit").rglob("*.py")
        if "__arch" in path.read_text(encoding="utf-8") and path.name != "spandrel_internals.py"
    ]
    assert not users, f"private spandrel modules named outside restorekit/spandrel_internals.py: {users}"


PRESET_DATA = {Path("restorekit/train/config.py")}
"""Training presets name the official option files' pretrained models: data, not defaults."""


def test_default_model_names_come_from_the_registry() -> None:
    """The registry's ``default: true`` marks are the only statement of which model is the
    default: no engine or front-end module spells a default model's name in code."""
    from restorekit.registry import load_registry

    defaults = {entry.name for entry in load_registry() if entry.default}
    offenders = []
    for folder in ("restorekit", "nodes", "gradio_app"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT)
            if relative in PRESET_DATA:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in defaults and id(node) not in docstrings:
                    offenders.append(f"{relative}:{node.lineno} {node.value}")
    assert not offenders, "use registry.default_model_name(purpose): " + ", ".join(offenders)


def test_face_defaults_follow_the_registry() -> None:
    from restorekit.faces.pipeline import FaceOptions
    from restorekit.registry import default_model_name

    # "auto" resolves to the registry's default parser when it is installed (see
    # test_faces_mediapipe.py::test_auto_parser_is_face_oval_until_parsenet_is_installed).
    assert FaceOptions().parser == "auto" and default_model_name("face_parse") == "parsing_parsenet"
    assert default_model_name("face_restore") == "GFPGANv1.4"
    assert default_model_name("upscale") == "RealESRGAN_x4plus"
