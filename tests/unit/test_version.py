"""One version source: ``jupyter_byok/_version.py``.

The Python build reads it (``[tool.hatch.version]`` in pyproject.toml); the front end's
``labextension/package.json`` carries its own copy, because npm needs one, and must match.
To release a new version, change both ``_version.py`` and ``labextension/package.json``.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import jupyter_byok
from jupyter_byok._version import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_exports_the_one_version() -> None:
    assert jupyter_byok.__version__ == __version__


def test_the_labextension_has_the_same_version() -> None:
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    assert package["version"] == __version__, (
        f"labextension/package.json says {package['version']}, "
        f"jupyter_byok/_version.py says {__version__}: change both together"
    )


def test_pyproject_takes_the_version_from_the_package() -> None:
    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest itself depends on tomli there
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "jupyter_byok/_version.py"


def test_the_installed_metadata_has_the_same_version() -> None:
    # an editable install records the version when installed: after a version change,
    # scripts/setup.sh reinstalls (it watches labextension/package.json, which changes too)
    assert metadata.version("jupyter_byok") == __version__
