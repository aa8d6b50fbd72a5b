"""Helpers shared by the tests that hold a compiled model against a hand-written reference.

``tests/torch/test_reference_networks.py``, ``test_topformer.py``, ``test_seaformer.py``,
``test_efficientvit.py``, ``test_pp_liteseg.py`` and ``test_segformer.py`` each import a network
from ``tests/reference/``, give it weights that make a wrong key map or a swapped tensor show, count
its FLOPs on the meta device and load its state dict into the compiled model. One copy of each step
lives here so that the tests differ only in what they check.

Randomised weights matter because default initialisation hides mistakes: a fresh batch norm has
mean 0 and variance 1 (an identity in eval mode), a fresh LayerNorm has weight 1 and bias 0, so a
map that swapped them, or skipped them, would still give equal outputs.

Imports torch: only tests under ``tests/torch`` import this module.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch.utils.flop_counter import FlopCounterMode

REFERENCES = Path(__file__).resolve().parent / "reference"


def reference_module(name: str) -> ModuleType:
    """``tests/reference/NAME.py``, imported by path (``tests/`` is not a package) once per session."""
    module_name = f"rtseg_reference_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REFERENCES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def randomise_(module: torch.nn.Module, seed: int | torch.Generator) -> torch.Generator:
    """Draw every Conv2d and BatchNorm2d tensor from ``seed``, in module order.

    Conv weights get a standard deviation of 1/sqrt(fan_in), so that activations keep a scale of
    about 1 through a deep network; conv biases 0.1; BN weights 0.5 to 1.5, biases and running
    means 0.2, running variances 0.5 to 1.5, so that no BN is an identity and a swapped
    weight/bias or mean/var pair changes the outputs. A generator given as ``seed`` is drawn from
    and returned, so that a test can draw further tensors (PP-LiteSeg's UAFM scales) after these.
    """
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * (1.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=generator))
                m.bias.copy_(torch.randn(c, generator=generator) * 0.2)
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.2)
                m.running_var.copy_(0.5 + torch.rand(c, generator=generator))
    return generator


def redraw_state_(module: torch.nn.Module, std: float = 0.2) -> None:
    """Replace every floating-point tensor of the state dict, in key order, from torch's global
    generator: running variances uniform in [0.5, 2], everything else (weights, biases, running
    means, positional embeddings) normal with standard deviation ``std``. Reaches what
    :func:`randomise_` does not know (linear layers, LayerNorms, free params)."""
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if key.endswith("running_var"):
                value.uniform_(0.5, 2.0)
            elif value.dtype.is_floating_point:
                value.copy_(std * torch.randn_like(value))


def perturb_parameters_(module: torch.nn.Module, std: float) -> None:
    """Add normal noise of standard deviation ``std`` to every parameter, in order, from torch's
    global generator: LayerNorm's weight 1 and bias 0, or a zero embedding, would hide a swap."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn_like(p))


def random_batch_norm_statistics_(module: torch.nn.Module) -> None:
    """Running means uniform in [-0.5, 0.5] and variances in [0.5, 2] for every BatchNorm2d, from
    torch's global generator, so that no batch norm is an identity in eval mode."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def meta_flops(module: torch.nn.Module, size: tuple[int, int]) -> int:
    """FlopCounterMode's total for one 3-channel image of ``size`` on the meta device: no memory or
    arithmetic, so full-resolution counts (1024x2048) cost milliseconds. ``module`` must be on meta."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.empty(1, 3, *size, device="meta"))
    return counter.get_total_flops()


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def saved_checkpoint(state: dict, path: Path, layout: str, meta: dict | None = None) -> str:
    """Save ``state`` as an mmcv-style training checkpoint (tensors under ``state_dict``, with a
    ``meta`` entry when given) and return the weights source ``LAYOUT@PATH`` that loads it."""
    payload = {"state_dict": state} if meta is None else {"meta": meta, "state_dict": state}
    torch.save(payload, path)
    return f"{layout}@{path}"
