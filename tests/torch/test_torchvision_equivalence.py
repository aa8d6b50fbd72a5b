"""Zoo entries written after torchvision compute exactly what torchvision computes.

For each pair (spec model, torchvision builder) the test builds torchvision's model with
``weights=None`` (nothing is downloaded), randomises every batch-norm's running statistics
and affine parameters (a freshly initialised BN is the identity in eval mode, which would
hide a misplaced or missing BN), copies the state dict into the compiled module through a
key map, and requires, for two input sizes of which one is not a multiple of 32:

* equal parameter counts, and equal to the analytic audit;
* ``audit.flops`` equal to ``FlopCounterMode``'s total on the compiled module AND on
  torchvision's module (so the spec has the same convolutions, not just the same count);
* outputs equal within 1e-5 (relative to the output's largest magnitude) in eval mode.

The key maps are written here for now; each names how torchvision's module paths read in
the spec (``backbone.layer3.0.downsample.1`` -> ``encoder.layer3.0.downsample_bn``).
Sizes are small: a DeepLabV3 forward at output stride 8 costs 12 GMACs at 224x224, seconds
on two CPU cores. ``check_conv_geometry`` compares every conv's stride, padding, dilation and
groups with its torchvision twin, which pins ASPP's rates (12/24/36) even where a small map
leaves most of a large rate's taps in the zero padding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from conftest import SPECS  # noqa: E402
from torchvision_compat import import_torchvision  # noqa: E402
from rtseg_compiler import compile_model  # noqa: E402


tv = import_torchvision()
from torchvision.models import mobilenet_v3_large, resnet50  # noqa: E402
from torchvision.models.segmentation import deeplabv3_resnet50, lraspp_mobilenet_v3_large  # noqa: E402

MODELS = SPECS / "models"
TOLERANCE = 1e-5


# ---------------------------------------------------------------------------
# Key maps: torchvision state-dict key -> compiled module key


def _resnet_key(key: str) -> str:
    """A torchvision ResNet key (without 'backbone.') in specs/encoders/resnet50.yaml's names."""
    key = key.replace("downsample.0.", "downsample.").replace("downsample.1.", "downsample_bn.")
    return "encoder." + key


def resnet_classifier_key(key: str) -> str:
    if key.startswith("fc."):
        return "head.fc.1." + key[len("fc."):]  # the linear op is Flatten + Linear
    return _resnet_key(key)


_DEEPLAB_HEAD = {
    # classifier = DeepLabHead: ASPP, 3x3 conv + BN (+ReLU), 1x1 classifier.
    r"classifier\.0\.convs\.0\.0\.": "head.aspp_1x1.conv.",
    r"classifier\.0\.convs\.0\.1\.": "head.aspp_1x1.bn.",
    r"classifier\.0\.convs\.([123])\.0\.": r"head.aspp_rate\1.conv.",
    r"classifier\.0\.convs\.([123])\.1\.": r"head.aspp_rate\1.bn.",
    r"classifier\.0\.convs\.4\.1\.": "head.aspp_pool.conv.",
    r"classifier\.0\.convs\.4\.2\.": "head.aspp_pool.bn.",
    r"classifier\.0\.project\.0\.": "head.project.conv.",
    r"classifier\.0\.project\.1\.": "head.project.bn.",
    r"classifier\.1\.": "head.refine.conv.",
    r"classifier\.2\.": "head.refine.bn.",
    r"classifier\.4\.": "head.classifier.",
    # aux_classifier = FCNHead(1024): 3x3 conv + BN (+ReLU, dropout 0.1), 1x1 classifier.
    r"aux_classifier\.0\.": "head.aux.conv.",
    r"aux_classifier\.1\.": "head.aux.bn.",
    r"aux_classifier\.4\.": "head.aux_classifier.",
}


def deeplabv3_key(key: str) -> str:
    if key.startswith("backbone."):
        return _resnet_key(key[len("backbone."):])
    for pattern, replacement in _DEEPLAB_HEAD.items():
        new, n = re.subn("^" + pattern, replacement, key)
        if n:
            return new
    raise KeyError(f"no mapping for torchvision key {key!r}")


def mobilenet_v3_key_map(features) -> Callable[[str], str]:
    """Key map for torchvision's MobileNetV3 ``features`` (a Sequential) into mobilenet_v3_large.yaml.

    ``features.0`` is the stem, ``features.16`` the last 1x1 conv, and ``features.i`` for
    i = 1..15 is bneck{i}, whose ``block`` Sequential holds, in order: the expansion
    (absent in bneck1), the depthwise conv, the SE module (if any) and the projection; each
    Conv2dNormActivation is (conv, BN[, activation]). Which child is which is read off the
    torchvision module, not assumed.
    """
    prefixes: dict[str, str] = {"0.0.": "stem.", "0.1.": "stem_bn.", "16.0.": "last.", "16.1.": "last_bn."}
    for i in range(1, len(features) - 1):
        children = list(features[i].block)
        for j, child in enumerate(children):
            if type(child).__name__ == "SqueezeExcitation":
                prefixes[f"{i}.block.{j}.fc1."] = f"bneck{i}.se_fc1."
                prefixes[f"{i}.block.{j}.fc2."] = f"bneck{i}.se_fc2."
                continue
            part = ("dw" if child[0].groups > 1 else "project" if j == len(children) - 1 else "expand")
            prefixes[f"{i}.block.{j}.0."] = f"bneck{i}.{part}."
            prefixes[f"{i}.block.{j}.1."] = f"bneck{i}.{part}_bn."

    def key_map(key: str) -> str:
        for old, new in prefixes.items():
            if key.startswith(old):
                return "encoder." + new + key[len(old):]
        raise KeyError(f"no mapping for torchvision MobileNetV3 key {key!r}")
    return key_map


def mobilenet_v3_classifier_key_map(reference) -> Callable[[str], str]:
    features = mobilenet_v3_key_map(reference.features)
    head = {"classifier.0.": "head.fc1.1.", "classifier.3.": "head.fc2.1."}  # linear = Flatten + Linear

    def key_map(key: str) -> str:
        if key.startswith("features."):
            return features(key[len("features."):])
        for old, new in head.items():
            if key.startswith(old):
                return new + key[len(old):]
        raise KeyError(f"no mapping for torchvision key {key!r}")
    return key_map


_LRASPP_HEAD = {"classifier.cbr.0.": "head.cbr.", "classifier.cbr.1.": "head.cbr_bn.",
                "classifier.scale.1.": "head.scale_conv.",
                "classifier.low_classifier.": "head.low_classifier.",
                "classifier.high_classifier.": "head.high_classifier."}


def lraspp_key_map(reference) -> Callable[[str], str]:
    # IntermediateLayerGetter keeps the features' child names: backbone.4.block.0.0.weight.
    features = mobilenet_v3_key_map(list(reference.backbone.children()))

    def key_map(key: str) -> str:
        if key.startswith("backbone."):
            return features(key[len("backbone."):])
        for old, new in _LRASPP_HEAD.items():
            if key.startswith(old):
                return new + key[len(old):]
        raise KeyError(f"no mapping for torchvision key {key!r}")
    return key_map


# ---------------------------------------------------------------------------
# Helpers


def randomise_batch_norms(module, seed: int) -> None:
    """Non-trivial BN statistics and affine parameters (eval-mode BN is otherwise the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                m.weight.copy_(0.5 + torch.rand(n, generator=generator))
                m.bias.copy_(0.1 * torch.randn(n, generator=generator))


def copy_state(reference, compiled, key_map: Callable[[str], str]) -> None:
    """Load ``reference``'s state into ``compiled``; every key on each side must be matched."""
    source = reference.state_dict()
    mapped = {key_map(k): v for k, v in source.items()}
    assert len(mapped) == len(source), "the key map sends two torchvision keys to one name"
    target = compiled.state_dict()
    missing, unexpected = sorted(set(target) - set(mapped)), sorted(set(mapped) - set(target))
    assert not missing and not unexpected, (f"compiled keys without a source: {missing[:8]}; "
                                            f"mapped keys the spec lacks: {unexpected[:8]}")
    for k, v in mapped.items():
        assert target[k].shape == v.shape, f"{k}: spec {tuple(target[k].shape)} vs {tuple(v.shape)}"
    compiled.load_state_dict(mapped, strict=True)


def check_conv_geometry(reference, compiled, key_map: Callable[[str], str]) -> int:
    """Every torchvision conv has its spec twin's stride, padding, dilation and groups.

    Independent of the input size, so it pins the dilation pattern (ResNet's
    previous-dilation rule, ASPP's rates) even where a small test map leaves a large
    rate's taps in the padding. Returns how many convs were compared.
    """
    compared = 0
    for name, m in reference.named_modules():
        if not isinstance(m, torch.nn.Conv2d):
            continue
        twin_name = key_map(f"{name}.weight").rsplit(".", 1)[0]
        twin = compiled.get_submodule(twin_name)
        assert isinstance(twin, torch.nn.Conv2d), f"{twin_name} is a {type(twin).__name__}"
        for attr in ("kernel_size", "stride", "padding", "dilation", "groups"):
            assert getattr(twin, attr) == getattr(m, attr), (
                f"{name} -> {twin_name}: {attr} {getattr(twin, attr)} vs torchvision {getattr(m, attr)}")
        compared += 1
    return compared


def _counted_forward(module, x):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        y = module(x)
    return y, counter.get_total_flops()


def _as_dict(y) -> dict:
    return dict(y) if isinstance(y, dict) else {"out": y}


def check_equivalent(spec: Path, reference, key_map, size: tuple[int, int], *, seed: int = 0,
                     outputs: tuple[str, ...] = ("out",), select: str = "all") -> None:
    """``outputs``: the names both modules must return, in order; ``select``: compile_model's
    ``outputs`` argument ("main" drops auxiliary heads)."""
    compiled = compile_model(spec, input_size=size, outputs=select)
    module, audit = compiled.module, compiled.audit
    ref_params = sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in module.parameters()) == audit.params == ref_params

    torch.manual_seed(seed)
    randomise_batch_norms(reference, seed)
    copy_state(reference, module, key_map)
    assert check_conv_geometry(reference, module, key_map) > 0
    reference.eval()
    module.eval()

    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed + 1))
    ref_out, ref_flops = _counted_forward(reference, x)
    out, flops = _counted_forward(module, x)
    assert flops == audit.flops, f"FlopCounterMode on the compiled module: {flops} vs audit {audit.flops}"
    assert ref_flops == audit.flops, f"FlopCounterMode on torchvision: {ref_flops} vs audit {audit.flops}"

    ref_out, out = _as_dict(ref_out), _as_dict(out)
    assert tuple(out) == outputs and tuple(ref_out) == outputs
    for name in outputs:
        a, b = out[name].reshape(ref_out[name].shape), ref_out[name]
        assert tuple(out[name].shape)[:2] == tuple(b.shape)[:2]
        scale = float(b.abs().max())  # relative to the output's magnitude (0.03 for MobileNetV3's
        assert scale > 0                # logits, whose last linear layer is initialised N(0, 0.01))
        error = float((a - b).abs().max())
        assert error <= TOLERANCE * scale, f"output '{name}': max |diff| {error:.3g} at scale {scale:.3g}"


# ---------------------------------------------------------------------------
# Tests


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The forwards here are small (under 3 GMACs); on a busy 2-core machine a second intra-op
    thread mostly spins waiting for the first, so this file runs single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# Small, and one of each pair is not a multiple of 32 (80 = 2.5 x 32, 40 = 1.25 x 32), so
# every stride-2 layer rounds up somewhere: ResNet-50 at 96x96 costs 0.74 GMACs, DeepLabV3
# at 64x64 2.6 GMACs (output stride 8 keeps its last two stages at 8x8).
CLASSIFIER_SIZES = [(96, 96), (80, 112)]
SEGMENTATION_SIZES = [(64, 64), (40, 56)]


def _size_id(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@pytest.mark.parametrize("size", CLASSIFIER_SIZES, ids=_size_id)
def test_resnet50_classifier(size):
    reference = resnet50(weights=None)
    check_equivalent(MODELS / "imagenet_resnet50.yaml", reference, resnet_classifier_key, size)


@pytest.mark.parametrize("size", SEGMENTATION_SIZES, ids=_size_id)
def test_deeplabv3_resnet50_with_aux_head(size):
    """Both outputs, in order: the module returns {'out', 'aux'} like torchvision's aux_loss=True."""
    reference = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    check_equivalent(MODELS / "deeplabv3_resnet50.yaml", reference, deeplabv3_key, size,
                     outputs=("out", "aux"))


def test_deeplabv3_resnet50_main_output_only():
    """outputs="main" drops the aux head and its cost: torchvision's aux_loss=False."""
    reference = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    check_equivalent(MODELS / "deeplabv3_resnet50.yaml", reference, deeplabv3_key, SEGMENTATION_SIZES[1],
                     select="main")


@pytest.mark.parametrize("size", CLASSIFIER_SIZES, ids=_size_id)
def test_mobilenet_v3_large_classifier(size):
    reference = mobilenet_v3_large(weights=None)
    check_equivalent(MODELS / "imagenet_mobilenet_v3_large.yaml", reference,
                     mobilenet_v3_classifier_key_map(reference), size)


@pytest.mark.parametrize("size", SEGMENTATION_SIZES, ids=_size_id)
def test_lraspp_mobilenet_v3_large(size):
    reference = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    check_equivalent(MODELS / "lraspp_mobilenet_v3_large.yaml", reference, lraspp_key_map(reference), size)
