# The one version source: pyproject.toml reads it ([tool.hatch.version]), and
# labextension/package.json must say the same (tests/unit/test_version.py).
__version__ = "0.1.0"
