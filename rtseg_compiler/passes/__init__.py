"""Compiler passes in pipeline order: expand, link, infer_shapes, count.

At an output stride ``passes.dilate.apply_output_stride`` takes the place of ``infer_shapes``.
The pipeline runs ``check`` on the result of each pass when ``RTSEGC_CHECK=1`` (the tests set it).
"""

from .check import check, check_resolved
from .count import Audit, LayerAudit, count
from .expand import expand_encoder, expand_meta_alone, expand_model
from .link import link
from .shapes import infer_shapes

__all__ = ["Audit", "LayerAudit", "check", "check_resolved", "count", "expand_encoder",
           "expand_meta_alone", "expand_model", "infer_shapes", "link"]
