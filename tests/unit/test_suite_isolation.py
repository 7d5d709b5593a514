"""A test that crashes its interpreter fails alone: the suite goes on and reports it by name.

Runs pytest with the options ``scripts/test.sh`` uses on a small suite of its own, in which
one test dies from SIGSEGV the way a native crash in llama.cpp would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SUITE = {
    "test_a.py": "def test_before():\n    assert 1 + 1 == 2\n",
    "test_b.py": (
        "import os, signal\n\n"
        "def test_native_crash():\n    os.kill(os.getpid(), signal.SIGSEGV)\n\n"
        "def test_after_crash_same_file():\n    assert True\n"
    ),
    "test_c.py": "def test_after():\n    assert 'ok'.upper() == 'OK'\n",
}


def _test_sh_options() -> list[str]:
    script = (Path(__file__).parents[2] / "scripts" / "test.sh").read_text()
    match = re.search(r'python -m pytest -n "\$\{BYOK_TEST_WORKERS:-(\d+)\}" (.*) "\$@"', script)
    assert match, "scripts/test.sh no longer runs pytest under xdist"
    return ["-n", match.group(1), *match.group(2).split()]


def test_a_crashing_test_fails_by_name_and_the_rest_still_run(tmp_path: Path) -> None:
    for name, body in SUITE.items():
        (tmp_path / name).write_text(body)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *_test_sh_options(), "-p", "no:cacheprovider", "-rA"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert re.search(r"crashed while running .*test_b\.py::test_native_crash", out), out
    assert "FAILED test_b.py::test_native_crash" in out, out
    for name in ("test_a.py::test_before", "test_c.py::test_after"):
        assert f"PASSED {name}" in out, out
    assert re.search(r"1 failed, [34] passed", out), out
