"""Notebook widgets: the pipeline canvas (an anywidget; its bundle is in ``static/``).

anywidget and ipywidgets are imported on first use of a widget, never by
``import jupyter_byok``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .builder import PipelineBuilder

__all__ = ["PipelineBuilder"]


def __getattr__(name: str) -> Any:
    if name == "PipelineBuilder":
        from .builder import PipelineBuilder

        return PipelineBuilder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
