"""The wheel installs everything under one `sopflow` package, so it sits beside any other package that
has its own top-level `engine`, `cli`, `schemas` or `definitions`."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("sopflow-*.whl")
    return found


def test_the_wheel_has_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"sopflow"}
    assert "sopflow/engine/runtime.py" in names
    assert "sopflow/schemas/definition.schema.json" in names
    assert "sopflow/definitions/org.yaml" in names
    assert "sopflow/engine/store/migrations/versions/0001_initial.py" in names
    # The HTML report's charting library, with its licence: the report opens without a network.
    vendor = "sopflow/engine/insight/vendor/"
    assert {f"{vendor}echarts.min.js", f"{vendor}ECHARTS-LICENSE"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_beside_a_package_named_engine(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    other = tmp_path / "other"
    for name in ("engine", "cli"):
        (other / name).mkdir(parents=True)
        (other / name / "__init__.py").write_text(f"WHO = 'another {name}'\n")
    program = (
        "import engine, cli\n"
        "from sopflow.engine import Engine\n"
        "from sopflow.cli.main import cli as command\n"
        "from sopflow.engine.definition.schema import load_schema\n"
        "import sopflow.engine.runtime as runtime\n"
        "assert engine.WHO == 'another engine' and cli.WHO == 'another cli'\n"
        f"assert runtime.__file__.startswith({str(target)!r})\n"
        'assert load_schema("definition")\n'
        "with Engine('sqlite:///cases.db') as sop:\n"
        "    from sopflow.cli.render import shipped_definitions\n"
        "    sop.deploy([shipped_definitions()])\n"
        "    print(len(sop.definitions()))\n"
    )
    # -S: no site directories, so the repository's editable install is not seen; the dependencies come
    # from this interpreter's site-packages, placed after the two folders under test.
    path = os.pathsep.join(
        [str(other), str(target), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", program],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) >= 12
