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

import difflib
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .passes.fold_bn import Fold, InferencePlan

__all__ = ["WeightsError", "fold_state_dict", "load_weights", "read_weights"]


class WeightsError(ValueError):
    """A weights file that does not fit the module; the message lists every bad key."""


def read_weights(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping or a ``.pt`` file (a bare state dict or a checkpoint's ``'model'``).

    Files load with ``weights_only=True``: a weights file is data, and unpickling arbitrary
    objects would run code.
    """
    if isinstance(source, Mapping):
        obj: Any = source
    else:
        try:
            obj = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch.load raises pickle, zip, OS and runtime errors
            raise WeightsError(f"{source}: cannot read weights ({type(exc).__name__}): expected a "
                               "file written by torch.save holding a state dict of tensors (only "
                               "tensors are loaded: weights_only=True)") from None
        if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
            obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{source if not isinstance(source, Mapping) else 'weights'}: expected a "
                           "state dict (name -> tensor) or a checkpoint with a 'model' entry")
    return dict(obj)


def load_weights(module: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> None:
    """Strictly load ``source`` into ``module``; :class:`WeightsError` names every missing,
    unexpected and mis-shaped key (with the closest expected key for an unexpected one)."""
    state = read_weights(source)
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(k for k in state if k in expected and state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        name = "weights" if isinstance(source, Mapping) else str(source)
        lines = [f"{name}: weights do not fit the compiled module (missing {len(missing)}, "
                 f"unexpected {len(unexpected)}, mis-shaped {len(mismatched)})"]
        lines += [f"  missing: {k}" for k in missing]
        for k in unexpected:
            close = difflib.get_close_matches(k, missing or list(expected), n=1, cutoff=0.75)
            lines.append(f"  unexpected: {k}" + (f" (did you mean {close[0]}?)" if close else ""))
        lines += [f"  mis-shaped: {k}: {tuple(state[k].shape)} in the file, "
                  f"{tuple(expected[k].shape)} in the module" for k in mismatched]
        raise WeightsError("\n".join(lines))
    module.load_state_dict(state, strict=True)


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
