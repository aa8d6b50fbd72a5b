"""Compiler passes, each a function over the IR, in pipeline order.

Analysis (``pipeline.analyze``): ``expand`` (with ``expand_layers``, ``expand_refs``,
``expand_exprs`` and the scopes of ``env``), ``link``, ``infer_shapes`` (``shapes``; at an output
stride ``dilate.apply_output_stride`` takes its place), ``count``, ``budget``. The pipeline runs
``check`` on the result of each pass when ``RTSEGC_CHECK=1`` (the tests set it).

Build, on a resolved graph: ``inplace`` (activations and adds overwrite a map nothing else reads)
and ``fold_bn`` (the inference build). ``dynamic`` answers which input sizes an export may leave
symbolic.
"""

from .check import check, check_resolved
from .count import Audit, LayerAudit, count
from .expand import expand_encoder, expand_meta_alone, expand_model
from .link import link
from .shapes import infer_shapes

__all__ = ["Audit", "LayerAudit", "check", "check_resolved", "count", "expand_encoder",
           "expand_meta_alone", "expand_model", "infer_shapes", "link"]
