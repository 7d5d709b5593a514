"""Node pipelines: a different model per node, cost per node, DataFrame batches.

See :class:`Pipeline`. Importing this package is cheap (no pandas, no ipywidgets).
"""

from __future__ import annotations

from ._core import Pipeline, PipelineError, PipelineRunError
from ._events import NodeEvent
from ._map import AdaptiveLimiter, CostConfirmationError, MapEstimate
from ._nodes import LLMNode, NodeResult, PipelineResult, PythonNode, SearchNode
from ._schema import FORMAT, SCHEMA_VERSION

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "AdaptiveLimiter",
    "CostConfirmationError",
    "LLMNode",
    "MapEstimate",
    "NodeEvent",
    "NodeResult",
    "Pipeline",
    "PipelineError",
    "PipelineResult",
    "PipelineRunError",
    "PythonNode",
    "SearchNode",
]
