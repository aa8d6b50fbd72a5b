"""EfficientViT-Seg-B0 (specs/models/efficientvit_seg_b0.yaml) against a hand-written reference.

``tests/reference/efficientvit.py`` is written from the paper (Cai et al. 2023, arXiv:2205.14756)
and the authors' code (mit-han-lab/efficientvit, ``efficientvit_seg_b0(dataset="cityscapes")``),
with the authors' module names, so its state dict has their checkpoint keys. It loads through the
model spec's ``efficientvit:efficientvit_seg_b0`` layout, which renames ``backbone.`` to ``encoder.``
and, in an MBConv or LiteMLA, the conv layer ``P.conv``/``P.norm`` to layers ``P``/``P_norm``. Checked:

* parameters: 706,691 on both sides (the figure measured from the authors' code);
* MACs: the audit equals FlopCounterMode / 2 on the reference on the meta device:
  4,391,436,288 at 1024x2048 (the published 4.39 G) and 1,097,859,072 at 512x1024;
* outputs: every weight and batch-norm statistic randomised, eval-mode logits within 1e-5 at
  128x256 and at 250x380, which is not a multiple of 32 (250 -> 125 -> 63 -> 32 -> 16 -> 8; the
  authors' fixed x2/x4 upsampling needs ceil(H/8) to be a multiple of 4, which 250 satisfies);
* at 64x96 the stride-32 map has 6 pixels, no more than the head dim 16, and the reference switches
  to its quadratic form: the values still agree, and its count differs by exactly the two forms'
  costs;
* at 100x164 the authors' upsampling fails (13 x 2 != 25), the compiled head resizes to the
  stride-8 grid and runs;
* ``full_resolution: true`` resizes the logits as the authors' evaluation script does;
* timm's ``efficientvit_b0`` (ImageNet classifier; built, never downloaded) imports through the
  encoder's ``timm:efficientvit_b0`` layout: imagenet_efficientvit_b0 equals its logits within 1e-5
  at 224x224 and 176x200, and in efficientvit_seg_b0 it fills the encoder, its head listed as not
  used. Skipped without timm.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from reference_checks import (meta_flops, n_params, redraw_state_, reference_module,  # noqa: E402
                              saved_checkpoint)
from rtseg_compiler import compile_model  # noqa: E402
from rtseg_compiler.pipeline import analyze  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "specs" / "models" / "efficientvit_seg_b0.yaml"
PARAMS = 706_691
TOLERANCE = 1e-5


def _randomised_reference():
    torch.manual_seed(0)
    reference = reference_module("efficientvit").efficientvit_seg_b0(19).eval()
    redraw_state_(reference, std=0.2)
    return reference


def _compiled_with_reference_weights(reference, size, folder: Path, **kwargs):
    """The reference's state dict, saved as the authors' package saves a checkpoint (weights under
    ``state_dict``), loaded strictly through the model spec's ``efficientvit:efficientvit_seg_b0``
    layout: every tensor of the compiled module filled, every key of the file used, shapes equal."""
    weights = saved_checkpoint(reference.state_dict(), folder / "efficientvit_seg_b0_cityscapes.pt",
                               "efficientvit:efficientvit_seg_b0")
    return compile_model(MODEL, size, weights=weights, **kwargs)


@pytest.fixture(scope="module")
def full_size_audit():
    return analyze(MODEL, (1024, 2048)).audit


def test_parameters_and_macs_equal_the_reference(full_size_audit):
    with torch.device("meta"):
        reference = reference_module("efficientvit").efficientvit_seg_b0(19).eval()
    assert n_params(reference) == PARAMS
    for size, audit in [((1024, 2048), full_size_audit), ((512, 1024), analyze(MODEL, (512, 1024)).audit)]:
        assert audit.params == PARAMS
        assert meta_flops(reference, size) == 2 * audit.macs


def test_the_published_figures_are_reproduced(full_size_audit):
    """706,691 parameters and 4.39 G MACs at 1024x2048, measured from the authors' code."""
    audit = full_size_audit
    assert audit.params == 706_691
    assert round(audit.macs / 1e9, 2) == 4.39


@pytest.mark.parametrize("size", [(128, 256), (250, 380)])
def test_outputs_equal_the_reference(size, tmp_path):
    reference = _randomised_reference()
    compiled = _compiled_with_reference_weights(reference, size, tmp_path)
    assert n_params(compiled.module) == compiled.audit.params == PARAMS
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference(x)
        got = compiled.module(x)
    assert got.shape == expected.shape == (2, 19, -(-size[0] // 8), -(-size[1] // 8))
    assert (got - expected).abs().max().item() <= TOLERANCE


def test_full_resolution_resizes_the_logits_as_the_authors_evaluation_does(tmp_path):
    """Their eval script resizes the stride-8 logits to the label with bicubic, align_corners=False."""
    size = (128, 256)
    reference = _randomised_reference()
    compiled = _compiled_with_reference_weights(reference, size, tmp_path,
                                                meta_params={"full_resolution": True})
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(reference(x), size=size, mode="bicubic", align_corners=False)
        got = compiled.module(x)
    assert got.shape == (1, 19, *size)
    assert (got - expected).abs().max().item() <= TOLERANCE


def test_the_quadratic_form_on_tiny_maps_computes_the_same(tmp_path):
    size = (64, 96)  # stride 32: 2x3 = 6 pixels <= head dim 16
    reference = _randomised_reference()
    compiled = _compiled_with_reference_weights(reference, size, tmp_path)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert (compiled.module(x) - reference(x)).abs().max().item() <= TOLERANCE
    # Per stage-3 block: 2 x 8 heads of d = 16 over N = 6 tokens; linear vs quadratic products.
    heads, d, n = 16, 16, 6
    linear, quadratic = heads * (d + 1) * d * 2 * n, heads * n * n * (d + d)
    with torch.device("meta"):
        meta_reference = reference_module("efficientvit").efficientvit_seg_b0(19).eval()
    assert meta_flops(meta_reference, size) == 2 * (compiled.audit.macs + 2 * (quadratic - linear))


def test_compiled_module_counts_like_its_audit_on_meta():
    compiled = compile_model(MODEL, (256, 512))
    meta = copy.deepcopy(compiled.module).to("meta")
    assert meta_flops(meta, (256, 512)) == 2 * compiled.audit.macs


def test_any_input_size_runs_where_the_fixed_factor_upsampling_cannot(tmp_path):
    size = (100, 164)  # stride 8: 13x21, stride 16: 7x11; x2 gives 14x22
    reference = _randomised_reference()
    compiled = _compiled_with_reference_weights(reference, size, tmp_path)
    x = torch.randn(1, 3, *size)
    with torch.no_grad(), pytest.raises(RuntimeError, match="must match the size"):
        reference(x)
    with torch.no_grad():
        assert compiled.module(x).shape == (1, 19, 13, 21)


# --------------------------------------------------------------------------- timm's ImageNet EfficientViT-B0

IMAGENET = ROOT / "specs" / "models" / "imagenet_efficientvit_b0.yaml"


@pytest.fixture(scope="module")
def timm_checkpoint(tmp_path_factory):
    """timm's efficientvit_b0 (built, nothing downloaded), randomised, and its state dict saved."""
    from torchvision_compat import import_torchvision
    import_torchvision()  # timm imports torchvision, whose extension may not load here
    timm = pytest.importorskip("timm")
    torch.manual_seed(2)
    reference = timm.create_model("efficientvit_b0", pretrained=False).eval()
    redraw_state_(reference, std=0.2)
    path = tmp_path_factory.mktemp("timm") / "efficientvit_b0.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


@pytest.mark.parametrize("size", [(224, 224), (176, 200)])
def test_timm_efficientvit_b0_imports_through_the_declared_layout(timm_checkpoint, size):
    """The encoder's ``timm: efficientvit_b0`` layout places every tensor of timm's classifier; the
    imagenet_efficientvit_b0 model then computes timm's logits (176x200: not a multiple of 32)."""
    reference, path = timm_checkpoint
    compiled = compile_model(IMAGENET, size, pretrained=f"timm:efficientvit_b0@{path}")
    assert compiled.audit.params == n_params(reference)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        diff = (compiled.module(x).flatten(1) - reference(x)).abs().max().item()
    assert diff <= TOLERANCE


def test_timm_backbone_fills_the_segmentation_encoder(timm_checkpoint):
    """In efficientvit_seg_b0 the same checkpoint fills the encoder; timm's classifier is listed as
    not used, and the stride-32 features equal timm's."""
    from rtseg_compiler.weights.importer import import_weights
    reference, path = timm_checkpoint
    compiled = compile_model(MODEL, (128, 256))
    report = import_weights(compiled, f"timm:efficientvit_b0@{path}")
    assert report.ok
    assert sorted(report.unused) == sorted(k for k in reference.state_dict() if k.startswith("head."))
    encoder = compile_model(ROOT / "specs" / "encoders" / "efficientvit_b0.yaml", (128, 256),
                            pretrained=f"timm:efficientvit_b0@{path}")
    x = torch.randn(1, 3, 128, 256)
    with torch.no_grad():
        got = encoder.module(x)
        got = got["stride32"] if isinstance(got, dict) else got
        assert (got - reference.forward_features(x)).abs().max().item() <= TOLERANCE
