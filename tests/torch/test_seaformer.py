"""SeaFormer-T (specs/models/seaformer_tiny.yaml) against the hand-written reference.

``tests/reference/seaformer.py`` rewrites the authors' SeaFormer backbone and light head
(github.com/fudan-zvg/SeaFormer, seaformer-seg/) in plain torch with the authors' module names.
Checked:

* parameters: 1,667,318 with 150 classes, the authors' figure, on the reference, the compiled
  module and the audit;
* MACs: the audit equals torch's FlopCounterMode / 2 on the reference, run on the meta device,
  at 512x512 (562,569,216, the 0.56 G of the authors' code) and at 100x150;
* outputs: every weight and batch-norm statistic of the reference randomised, its state dict saved
  as a checkpoint (``{"state_dict": ...}``, the authors' keys) and loaded through the encoder
  spec's ``mmseg:seaformer_tiny`` layout (which reshapes the positional embeddings from 1 x C x 16
  to the param's 1 x C x 16 x 1 or 1 x C x 1 x 16), eval-mode logits agree within 1e-5 at 128x192
  and at 100x150 (not a multiple of 32 or 64: the stride-32 and stride-64 maps are 4x5 and 2x3, so
  the positional embeddings are resampled from 16 positions to 2, 3, 4 and 5). Neither size is
  square, so a row embedding used for the columns would not even fit; SeaFormer-S and -B load
  through the same layout;
* the import report of that layout: every key of the checkpoint used, eight embeddings reshaped.

None of it reads the strides the IR gives the squeezed C x H x 1 and C x 1 x W maps.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch.nn import functional as F  # noqa: E402

from reference_checks import (meta_flops, n_params, perturb_parameters_,  # noqa: E402
                              random_batch_norm_statistics_, reference_module, saved_checkpoint)
from rtseg_compiler import compile_model, create_model  # noqa: E402
from rtseg_compiler.pipeline import analyze  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "specs" / "models" / "seaformer_tiny.yaml"
PARAMS = 1_667_318
SIZES = [(128, 192), (100, 150)]


def _randomised_reference():
    """The reference with every weight perturbed and every BN's statistics random, so that no
    BN is an identity and no embedding is zero."""
    torch.manual_seed(0)
    reference = reference_module("seaformer").SeaFormerSeg(150).eval()
    perturb_parameters_(reference, std=0.1)
    random_batch_norm_statistics_(reference)
    return reference


def _weights(reference: torch.nn.Module, folder: Path) -> str:
    """The reference's state dict saved with the authors' keys, for the encoder's layout to load."""
    return saved_checkpoint(reference.state_dict(), folder / "seaformer_tiny_ade20k.pth",
                            "mmseg:seaformer_tiny")


def test_parameters_and_macs_equal_the_reference():
    with torch.device("meta"):
        reference = reference_module("seaformer").SeaFormerSeg(150).eval()
    assert n_params(reference) == PARAMS
    for size in [(512, 512), (100, 150)]:
        audit = analyze(MODEL, size).audit
        assert meta_flops(reference, size) == 2 * audit.macs
        assert audit.params == PARAMS


def test_the_published_figures_are_reproduced():
    """The authors' code gives 1,667,318 parameters and 0.56 G MACs at 512x512 (150 classes)."""
    audit = analyze(MODEL).audit  # the model's own input, 512x512
    assert audit.params == 1_667_318
    assert round(audit.macs / 1e9, 2) == 0.56


@pytest.mark.parametrize("size", SIZES)
def test_outputs_equal_the_reference(size, tmp_path):
    reference = _randomised_reference()
    compiled = create_model(MODEL, input_size=size, weights=_weights(reference, tmp_path)).eval()
    assert n_params(compiled) == compiled.audit.params == PARAMS
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference(x)
        got = compiled(x)
    assert got.shape == expected.shape == (2, 150, -(-size[0] // 8), -(-size[1] // 8))
    assert (got - expected).abs().max().item() <= 1e-5


def test_full_resolution_logits_are_the_reference_resized(tmp_path):
    """``full_resolution: true`` resizes the stride-8 logits to the input, as mmseg does at inference."""
    size = (100, 150)
    reference = _randomised_reference()
    compiled = create_model(MODEL, input_size=size, meta_params={"full_resolution": True},
                            weights=_weights(reference, tmp_path)).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = F.interpolate(reference(x), size=size, mode="bilinear", align_corners=False)
        got = compiled(x)
    assert got.shape == (1, 150, *size)
    assert (got - expected).abs().max().item() <= 1e-5


def test_compiled_module_counts_like_the_audit_on_meta():
    compiled = compile_model(MODEL, (128, 192))
    meta = copy.deepcopy(compiled.module).to("meta")
    assert meta_flops(meta, (128, 192)) == 2 * compiled.audit.macs


def test_an_authors_checkpoint_imports_through_the_declared_layout(tmp_path):
    """The reference carries the authors' module names, so its state dict, saved as mmcv saves a
    training checkpoint (weights under ``state_dict``, next to ``meta``), has the keys of the
    released SeaFormer-T files. The encoder's ``mmseg:seaformer_tiny`` layout renames every one,
    reshapes the eight positional embeddings, and fills the light head."""
    from rtseg_compiler.weights.importer import import_weights
    reference = _randomised_reference()
    weights = saved_checkpoint(reference.state_dict(), tmp_path / "seaformer_tiny_ade20k.pth",
                               "mmseg:seaformer_tiny", meta={"iter": 160000})
    size = (100, 150)
    compiled = compile_model(MODEL, size)
    report = import_weights(compiled, weights)
    assert report.ok and not report.unused
    assert len(report.reshaped) == 2 * 2 * 4  # q and k embeddings of rows and columns, 4 blocks
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        diff = (compiled.module(x) - reference(x)).abs().max().item()
    assert diff <= 1e-5


#: SeaFormer-S and -B (the authors' seaformer_small.py and seaformer_base.py) are the Tiny files
#: with other lists: name in the reference -> (encoder_params, meta_params).
VARIANTS = {
    "SMALL": ({"mv2_channels": [16, 24, 24, 48, 48, 96, 96], "down_expansions": [4, 6],
               "emb_dims": [160, 192], "depths": [3, 3], "num_heads": 6}, {"embed_dims": [96, 128]}),
    "BASE": ({"mv2_channels": [16, 32, 32, 64, 64, 128, 128], "down_expansions": [4, 6],
              "emb_dims": [192, 256], "depths": [4, 4], "num_heads": 8}, {"embed_dims": [128, 160]}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_small_and_base_are_parameters_of_the_same_files(variant, tmp_path):
    encoder_params, meta_params = VARIANTS[variant]
    cfg = getattr(reference_module("seaformer"), variant)
    with torch.device("meta"):
        reference = reference_module("seaformer").SeaFormerSeg(150, cfg).eval()
    size = (512, 512)
    audit = analyze(MODEL, size, encoder_params=encoder_params, meta_params=meta_params).audit
    assert audit.params == n_params(reference)
    assert 2 * audit.macs == meta_flops(reference, size)
    torch.manual_seed(0)
    reference = reference_module("seaformer").SeaFormerSeg(150, cfg).eval()
    random_batch_norm_statistics_(reference)
    compiled = create_model(MODEL, input_size=(100, 150), encoder_params=encoder_params,
                            meta_params=meta_params, weights=_weights(reference, tmp_path)).eval()
    x = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        assert (compiled(x) - reference(x)).abs().max().item() <= 1e-5


def _mmcv_style_macs(cfg: dict, size: tuple[int, int]) -> int:
    """What mmcv's get_model_complexity_info (the authors' tools/get_flops.py) adds up for the
    reference: conv MACs plus one per conv-bias output, two per batch-norm input element (affine),
    one per ReLU/ReLU6 output (h_sigmoid's ReLU6 included); no hook sees matmul or interpolate."""
    seaformer = reference_module("seaformer")
    with torch.device("meta"):
        net = seaformer.SeaFormerSeg(150, cfg).eval()
    total = 0

    def conv(mod, inputs, out):
        nonlocal total
        total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        total += out.numel() if mod.bias is not None else 0

    def bn(mod, inputs, out):
        nonlocal total
        total += 2 * inputs[0].numel()

    def act(mod, inputs, out):
        nonlocal total
        total += out.numel()

    def h_sigmoid(x):
        nonlocal total
        total += x.numel()
        return torch.nn.functional.relu6(x + 3) / 6

    for mod in net.modules():
        hook = {torch.nn.Conv2d: conv, torch.nn.BatchNorm2d: bn, torch.nn.ReLU: act, torch.nn.ReLU6: act}
        if type(mod) in hook:
            mod.register_forward_hook(hook[type(mod)])
    saved, seaformer.h_sigmoid = seaformer.h_sigmoid, h_sigmoid
    try:
        with torch.no_grad():
            net(torch.empty(1, 3, *size, device="meta"))
    finally:
        seaformer.h_sigmoid = saved
    return total


@pytest.mark.parametrize("variant, readme_gflops", [("TINY", 0.6), ("SMALL", 1.1), ("BASE", 1.8)])
def test_the_readme_figures_are_mmcv_counts(variant, readme_gflops):
    """The authors' README gives 0.6, 1.1 and 1.8 "FLOPs" (G) for T, S and B at 512x512. They are
    mmcv's counts, which add batch norms, activations and biases to the convs' MACs and miss the
    attention products: SeaFormer-S's 1.03 G MACs would not round to 1.1."""
    cfg = getattr(reference_module("seaformer"), variant)
    assert round(_mmcv_style_macs(cfg, (512, 512)) / 1e9, 1) == readme_gflops
