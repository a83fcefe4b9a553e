"""The package's layers hold: import-linter contracts (pyproject.toml), no module reaches another's private names,
and the demo generators stay out of the core."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "keras_insightface"


def test_import_contracts_hold():
    pytest.importorskip("importlinter.cli", reason="import-linter is in the test extra")
    # in a subprocess: lint_imports replaces the standard streams, which breaks pytest's capture
    code = (f"import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True, no_logo=True))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def _private_imports(path):
    """``(importing module, imported module, name)`` for each ``from keras_insightface.x import _name``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_insightface"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield node.module, alias.name


def test_no_module_imports_another_modules_private_names():
    found = [f"{path.relative_to(PACKAGE)}: {module}.{name}" for path in sorted(PACKAGE.rglob("*.py"))
             for module, name in _private_imports(path)]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_the_check_sees_a_private_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from keras_insightface.data.loader import _Decode\n")
    assert list(_private_imports(module)) == [("keras_insightface.data.loader", "_Decode")]
