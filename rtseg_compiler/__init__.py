"""rtseg_compiler: YAML layer graphs in, audited PyTorch segmentation networks out.

>>> from rtseg_compiler import create_model, list_models
>>> list_models("skipnet_*")                                      # doctest: +SKIP
['skipnet_mobilenet_v1', 'skipnet_resnet18', 'skipnet_shufflenet_v1', 'skipnet_vgg16']
>>> net = create_model("skipnet_mobilenet_v1", num_classes=19)      # doctest: +SKIP
>>> net.training, net.audit.params, net.feature_info.channels()   # doctest: +SKIP

>>> from rtseg_compiler import analyze
>>> a = analyze("specs/models/skipnet_mobilenet_v1.yaml")          # doctest: +SKIP
>>> a.audit.macs                                                  # doctest: +SKIP

``analyze`` needs no torch; ``create_model`` and ``compile_model`` also build the module
(``api.py``, both through the one builder in ``build.py``).
"""

from __future__ import annotations

from .allocator import configure_allocator
from .api import Feature, FeatureInfo, compile_model, create_model, list_models
from .build import CompiledModel
from .build import class_name_of as _class_name  # the name cli.py and older scripts import
from .diagnostics import Diagnostic, Location, SpecError
from .ir import Graph
from .passes.budget import Budget
from .passes.count import Audit
from .pipeline import Analysis, analyze, validate_file
from .spec.sources import SpecSource

__all__ = ["Analysis", "Audit", "Budget", "CompiledModel", "Diagnostic", "Feature", "FeatureInfo",
           "Location", "SpecError", "SpecSource", "analyze", "compile_model", "configure_allocator",
           "create_model", "list_models", "validate_file", "__version__"]

__version__ = "0.1.0"
