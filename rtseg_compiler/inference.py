"""The inference build: batch norm folded into convs, no dropout, activations in place.

The builder (``build.py``) runs the inference build for ``inference=True``. The graph side is
``passes/fold_bn.py`` (torch-free, audited); this module does the weight side with torch:
:func:`fold_state_dict` turns a state dict of the ordinary compiled module (the layout training
writes) into one for the folded module, so a checkpoint never needs a separate inference format.

Folding, per output channel ``o`` with ``s = gamma / sqrt(running_var + eps)``::

    W'[o] = W[o] · s[o]              conv weight (out, in/groups, kh, kw)
    b'[o] = (b[o] - mean[o]) · s[o] + beta[o]     (b = 0 for a conv without bias)

A transposed conv stores its weight as (in, out/groups, kh, kw): output channel
``g·(out/groups) + j`` is column ``j`` of the rows of group ``g``, so the weight is viewed as
(groups, in/groups, out/groups, kh, kw) and scaled along its third axis. The arithmetic runs in
float64 and is cast back, so the folded module matches the eval-mode original to ~1e-6 relative
in float32 (tests/torch/test_inference.py requires 1e-5).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .passes.fold_bn import Fold, InferencePlan
from .weights.files import read_state_dict
from .weights.load import load_weights
from .weights.report import WeightsError

__all__ = ["WeightsError", "build_inference", "fold_state_dict", "load_weights", "read_weights"]

#: The one reader (:func:`rtseg_compiler.weights.files.read_state_dict`); the name stays for existing imports.
read_weights = read_state_dict


def fold_state_dict(state: Mapping[str, torch.Tensor], plan: InferencePlan) -> dict[str, torch.Tensor]:
    """The folded module's state dict, from the unfolded module's; see the module docstring."""
    out = dict(state)
    for fold in plan.folds:
        weight, bias = _folded(state, fold)
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out.pop(f"{fold.bn}.{key}", None)
        out[f"{fold.conv}.weight"] = weight
        out[f"{fold.conv}.bias"] = bias
    return out


def _folded(state: Mapping[str, torch.Tensor], fold: Fold) -> tuple[torch.Tensor, torch.Tensor]:
    weight = state[f"{fold.conv}.weight"]
    dtype = weight.dtype
    w = weight.detach().to(torch.float64)
    mean = state[f"{fold.bn}.running_mean"].detach().to(torch.float64)
    var = state[f"{fold.bn}.running_var"].detach().to(torch.float64)
    channels = mean.numel()
    gamma = state[f"{fold.bn}.weight"].detach().to(torch.float64) if fold.affine else torch.ones_like(mean)
    beta = state[f"{fold.bn}.bias"].detach().to(torch.float64) if fold.affine else torch.zeros_like(mean)
    bias = (state[f"{fold.conv}.bias"].detach().to(torch.float64) if fold.conv_bias
            else torch.zeros(channels, dtype=torch.float64))
    scale = gamma / torch.sqrt(var + fold.eps)
    if fold.transposed:
        cin, per_group, kh, kw = w.shape
        g = fold.groups
        w = (w.reshape(g, cin // g, per_group, kh, kw) * scale.reshape(g, 1, per_group, 1, 1)) \
            .reshape(cin, per_group, kh, kw)
    else:
        w = w * scale.reshape(-1, 1, 1, 1)
    return w.to(dtype).contiguous(), ((bias - mean) * scale + beta).to(dtype)


def build_inference(analysis: Any, *, weights: str | Path | Mapping[str, torch.Tensor] | None = None,
                    inplace: bool = True, class_name: str = "CompiledNet") -> tuple[nn.Module, InferencePlan, Any]:
    """Deprecated: use ``rtseg_compiler.build.build(analysis, inference=True, ...)``.

    Kept so that code written against the earlier public name still runs. It returns what it
    always did, (folded module in eval mode, the InferencePlan, the folded graph's audit), now
    taken from the one builder's :class:`~rtseg_compiler.build.CompiledModel` (``.module``,
    ``.inference``, ``.audit``), so both give the same module.
    """
    warnings.warn("rtseg_compiler.inference.build_inference is deprecated; use "
                  "rtseg_compiler.build.build(analysis, inference=True, weights=..., inplace=...) "
                  "(its .module, .inference and .audit), or compile_model(spec, inference=True)",
                  DeprecationWarning, stacklevel=2)
    from .build import build

    compiled = build(analysis, inference=True, weights=weights, inplace=inplace, class_name=class_name)
    return compiled.module, compiled.inference, compiled.audit
