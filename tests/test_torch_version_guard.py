"""The torch-version guard: setup.py records the torch it compiled against in the pure-Python
pylibnn/_build_config.py, ``import pylibnn`` compares it with the running torch before it
loads _C and, on a mismatch, raises an ImportError naming both versions and the rebuild
command. The wheel's metadata pins that torch, and pyproject.toml's build requirement pins
the torch the project builds against."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pylibnn
from pylibnn import _build_config, ops

REBUILD = "-m pip install --no-build-isolation --force-reinstall --no-deps"
ROOT = Path(__file__).resolve().parent.parent


def test_recorded_version_is_the_running_torch_and_the_compiled_one():
    assert _build_config.TORCH_VERSION == torch.__version__
    assert pylibnn.build_info()["torch"] == _build_config.TORCH_VERSION  # the record inside _C agrees


def test_mismatch_message_names_both_versions_and_the_command():
    with pytest.raises(ImportError) as caught:
        ops.check_torch_version("2.13.0", torch.__version__, _build_config.SOURCE_DIR)
    message = str(caught.value)
    assert f"pylibnn was built against torch 2.13.0, but torch {torch.__version__} is installed" in message
    assert f"{sys.executable} {REBUILD} " in message
    assert _build_config.SOURCE_DIR in message
    ops.check_torch_version(torch.__version__, torch.__version__, _build_config.SOURCE_DIR)  # a match passes


def test_import_with_a_faked_recorded_version_fails_before_loading_the_extension():
    # A fresh interpreter whose pylibnn._build_config records another torch: the import must
    # stop with the guard's ImportError, and _C (which would fail with a linker message
    # against a really different torch) must not have been loaded.
    code = (
        "import sys, types, torch\n"
        "fake = types.ModuleType('pylibnn._build_config')\n"
        "fake.TORCH_VERSION = '2.13.0'\n"
        f"fake.SOURCE_DIR = {_build_config.SOURCE_DIR!r}\n"
        "sys.modules['pylibnn._build_config'] = fake\n"
        "try:\n"
        "    import pylibnn\n"
        "except ImportError as error:\n"
        "    print(error)\n"
        "    assert 'pylibnn._C' not in sys.modules, 'the extension was loaded'\n"
        "    sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert f"built against torch 2.13.0, but torch {torch.__version__} is installed" in result.stdout
    assert REBUILD in result.stdout


def test_installed_metadata_pins_the_torch_built_against():
    requirements = importlib.metadata.requires("pylibnn") or []
    assert f"torch=={importlib.metadata.version('torch')}" in requirements, requirements


def test_build_requirement_pins_one_torch_version():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("runs from a source checkout (pyproject.toml beside tests/)")
    requires = tomllib.loads(pyproject.read_text())["build-system"]["requires"]
    pins = [r for r in requires if r.replace(" ", "").startswith("torch")]
    assert len(pins) == 1 and pins[0].startswith("torch==") and pins[0].count(".") == 2, pins
