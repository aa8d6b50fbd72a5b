"""Every model in specs/models compiles, and torch agrees with the analytic audit.

For each model file and for two input sizes, 512x1024 (Cityscapes at half
resolution, RTSeg's training size) and 360x640 (the paper's speed/GFLOPs size,
which is not a multiple of 32, so the metas' crop layers are exercised), the
emitted module must have exactly ``audit.params`` parameters, produce
``audit.output_shape`` = (1, num_classes, H, W), and its forward pass must cost
exactly ``audit.flops`` (2 x MACs) by ``torch.utils.flop_counter``.

Modules are built and run on the meta device: no weights are allocated or
initialised and no arithmetic is done, so VGG-16 at 512x1024 (~200 GMACs)
costs the same as MobileNet here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from rtseg_compiler import SpecError, analyze, compile_model  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parents[2] / "specs" / "models"
SEGMENTATION_MODELS = sorted(p for p in MODELS_DIR.glob("*.yaml")
                             if p.stem.split("_")[0] in ("skipnet", "unet", "dilation"))
OTHER_MODELS = sorted(set(MODELS_DIR.glob("*.yaml")) - set(SEGMENTATION_MODELS))
SIZES = [(512, 1024), (360, 640)]


def _compile_on_meta(path: Path, size: tuple[int, int]):
    with torch.device("meta"):
        return compile_model(path, input_size=size)


def _check_against_audit(compiled, batch_shape: tuple[int, int, int, int]) -> tuple:
    module, audit = compiled.module, compiled.audit
    assert sum(p.numel() for p in module.parameters()) == audit.params
    x = torch.empty(batch_shape, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        y = module(x)
    if isinstance(y, dict):  # several outputs (outputs: in the meta): the main one comes first
        heads = {h.name: h for h in audit.heads}
        assert list(y) == list(heads)[:len(y)]
        for name, value in y.items():
            assert tuple(value.shape) == tuple(heads[name].output_shape)
        y = next(iter(y.values()))
    assert tuple(y.shape) == tuple(audit.output_shape)
    assert counter.get_total_flops() == audit.flops
    return tuple(y.shape)


def test_zoo_is_complete():
    """The RTSeg grid: three metas times four encoders (guards the glob below)."""
    names = {p.stem for p in SEGMENTATION_MODELS}
    expected = {f"{m}_{e}" for m in ("skipnet", "unet", "dilation")
                for e in ("vgg16", "resnet18", "mobilenet_v1", "shufflenet_v1")}
    assert expected <= names, f"missing: {sorted(expected - names)}"


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("path", SEGMENTATION_MODELS, ids=lambda p: p.stem)
def test_segmentation_model_matches_audit(path: Path, size: tuple[int, int]):
    compiled = _compile_on_meta(path, size)
    num_classes = compiled.graph.num_classes
    assert num_classes == 20
    shape = _check_against_audit(compiled, (1, 3, *size))
    assert shape == (1, num_classes, *size)
    assert compiled.audit.flops > 0


@pytest.mark.parametrize("path", OTHER_MODELS, ids=lambda p: p.stem)
def test_other_models_match_audit(path: Path):
    """Non-segmentation zoo entries (ImageNet classifiers) at their own default size."""
    compiled = _compile_on_meta(path, None)
    _check_against_audit(compiled, tuple(compiled.audit.input))


def test_models_compile_on_cpu_with_same_params():
    """The meta-device build is not a shortcut that hides a real-device problem."""
    path = MODELS_DIR / "skipnet_shufflenet_v1.yaml"
    compiled = compile_model(path, input_size=(64, 96))
    on_meta = _compile_on_meta(path, (64, 96))
    assert (sum(p.numel() for p in compiled.module.parameters())
            == sum(p.numel() for p in on_meta.module.parameters()) == compiled.audit.params)
    with torch.no_grad():
        y = compiled.module(torch.zeros(1, 3, 64, 96))
    assert tuple(y.shape) == (1, 20, 64, 96)


@pytest.mark.parametrize("meta, names", [("skipnet", ("'up32' is 24x40", "'score16' is 23x40")),
                                         ("unet", ("'up16' is 24x40", "'encoder.stride16' is 23x40"))])
def test_unaligned_fusion_names_layers_and_suggests_sizes(tmp_path: Path, meta: str, names: tuple):
    """A decoder whose fusions are not cropped fails at 360x640 with a located, actionable error.

    With MobileNet v1, 360 -> 180 -> 90 -> 45 -> 23 -> 12, so the stride-32 map
    upsampled by 2 has 24 rows against the stride-16 tap's 23. The shipped metas
    crop; this test removes their alignment crops (keeping the final crop to the input).
    """
    source = (MODELS_DIR.parent / "meta" / f"{meta}.yaml").read_text()
    kept = [line for line in source.splitlines()
            if "op: crop" not in line or "inputs: [up8, input]" in line or "up1_aligned" in line]
    text = "\n".join(kept)
    for s in (32, 16, 8, 4, 2):
        text = text.replace(f"up{s}_aligned", f"up{s}")
    broken = tmp_path / f"{meta}_nocrop.yaml"
    broken.write_text(text)
    encoder = MODELS_DIR.parent / "encoders" / "mobilenet_v1.yaml"
    with pytest.raises(SpecError) as info:
        analyze(encoder=encoder, meta=broken, input_size=(360, 640))
    first = info.value.diagnostics[0]
    assert first.loc is not None and Path(first.loc.file).name == broken.name and first.loc.line > 0
    for fragment in names + ("at layer", "for input 360x640"):
        assert fragment in first.message
    assert str(first.hint).startswith("input sizes that work nearby: ")
    suggested = str(first.hint).split(": ", 1)[1].split(", ")
    assert suggested and all(item.endswith("x640") for item in suggested)  # only the height is off
    for item in suggested:  # every suggested size really works
        h, w = (int(v) for v in item.split("x"))
        assert analyze(encoder=encoder, meta=broken, input_size=(h, w)).audit.output_shape == (1, 21, h, w)
