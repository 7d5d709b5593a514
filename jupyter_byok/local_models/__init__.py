"""The local model manager: pull GGUF models (Hugging Face Hub or a URL), verified, into a
registry; list them with their facts; remove, set the default, test.

One set of functions returning plain data, shared by ``jupyter byok local ...``, the
``%byok local ...`` magic and the server's ``/byok/local/*`` routes. See
``docs/local-models.md``.
"""

from __future__ import annotations

from ._gguf import inspect_gguf, ram_estimate
from ._jobs import PullJobs, pull_jobs
from ._manage import (
    default_local_name,
    list_local_models,
    remove_model,
    set_default,
    set_options,
    test_model,
)
from ._pull import HUB_SECRET, MODELS_DIR_ENV, Progress, PullCancelled, PullResult, models_dir, pull
from ._spec import PullSpec, check_name, human_size, model_name_for, parse_spec

__all__ = [
    "HUB_SECRET",
    "MODELS_DIR_ENV",
    "Progress",
    "PullCancelled",
    "PullJobs",
    "PullResult",
    "PullSpec",
    "check_name",
    "default_local_name",
    "human_size",
    "inspect_gguf",
    "list_local_models",
    "model_name_for",
    "models_dir",
    "parse_spec",
    "pull",
    "pull_jobs",
    "ram_estimate",
    "remove_model",
    "set_default",
    "set_options",
    "test_model",
]
