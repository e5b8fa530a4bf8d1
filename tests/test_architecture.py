"""The layering of the apps, checked on every test run (see docs/architecture.md)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_apps_import_downwards_only_and_have_no_module_cycles():
    result = _run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_app_code_has_no_function_level_imports():
    result = _run(str(BIN / "ruff"), "check", "--no-cache", "cases", "inference", "verification", "intake", "integrations", "octportal")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    """The contract is live: a records module importing the grading app fails it."""
    probe = ROOT / "cases" / "_layer_probe.py"
    probe.write_text("import verification.models  # noqa: F401\n")
    try:
        result = _run(str(BIN / "lint-imports"), "--no-cache")
    finally:
        probe.unlink()
    assert result.returncode != 0
    assert "cases._layer_probe -> verification.models" in result.stdout
