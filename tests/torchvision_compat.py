"""Import torchvision's model zoo where its compiled extension cannot load.

PyPI's torchvision wheels are built against PyPI's CUDA torch. Beside the CPU torch
build this project installs (torch 2.13.0+cpu with torchvision 0.28.0), the extension
``torchvision/_C.so`` fails to load (it links ``libc10_cuda.so``), which torchvision
tolerates, but ``torchvision/_meta_registrations.py`` then registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms`` unconditionally and the import fails
with "operator torchvision::nms does not exist".

The model definitions the tests compare against (ResNet, MobileNetV3, VGG, LR-ASPP,
DeepLabV3) are pure Python and never call those detection ops, so declaring the two
schemas before the import is enough. The declared ops have no kernels: calling them
would raise, which is what should happen without the extension. Where the extension
loads, nothing is declared.
"""

from __future__ import annotations

from types import ModuleType

import pytest

#: The detection ops torchvision registers fake kernels for without checking the extension.
_DETECTION_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_declared: list = []  # keeps the torch.library.Library alive for the process


def _declare_missing_detection_ops() -> None:
    import torch

    missing = [name for name in _DETECTION_OP_SCHEMAS
               if not torch._C._dispatch_has_kernel(f"torchvision::{name}")  # noqa: SLF001
               and not _schema_exists(name)]
    if not missing:
        return
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        library.define(_DETECTION_OP_SCHEMAS[name])
    _declared.append(library)


def _schema_exists(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")  # noqa: SLF001
        return True
    except RuntimeError:
        return False


def import_torchvision() -> ModuleType:
    """``torchvision``, importable for its models; skips the calling test if it is not installed."""
    pytest.importorskip("torch")
    try:
        import torchvision
        return torchvision
    except ImportError:
        pytest.skip("torchvision is not installed (the README's test command installs 0.28.0)",
                    allow_module_level=True)
    except RuntimeError:
        pass  # the extension did not load: declare what _meta_registrations needs, then retry
    import sys
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _declare_missing_detection_ops()
    import torchvision
    return torchvision
