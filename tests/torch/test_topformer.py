"""TopFormer-T (specs/models/topformer_tiny.yaml) against the hand-written reference.

``tests/reference/topformer.py`` rebuilds the authors' network (hustvl/TopFormer, tiny
configuration, 150 ADE20K classes) in plain torch, with the authors' module names. Checked:

* parameters: 1,389,654 on the reference, the compiled module and the audit (the authors' count);
* MACs: the audit equals torch's FlopCounterMode / 2 on the reference, run on the meta device
  (its ``torch.matmul`` attention is counted there as on CPU; the compiled module's SDPA is
  counted only on meta), at 512x512 and at 100x150; 0.53 G at 512x512 is the paper's figure;
* outputs: every weight and batch-norm statistic of the reference randomised, its state dict saved
  as mmcv saves a training checkpoint (``{"meta": ..., "state_dict": ...}``, the authors' keys
  ``backbone.*`` and ``decode_head.*``) and loaded through the model spec's ``mmseg:topformer_tiny``
  layout, eval-mode logits agree within 1e-5 at 64x96 and at 100x150, which is not a multiple of
  32 (100 -> 50 -> 25 -> 13 -> 7 -> 4, pooled to 2: the pyramid's adaptive bins overlap).
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from conftest import SPECS  # noqa: E402
from reference_checks import (meta_flops, n_params, randomise_, reference_module,  # noqa: E402
                              saved_checkpoint)
from rtseg_compiler import compile_model, create_model  # noqa: E402
from rtseg_compiler.pipeline import analyze  # noqa: E402

MODEL = SPECS / "models" / "topformer_tiny.yaml"
PARAMS = 1_389_654
TOLERANCE = 1e-5


def _reference(device: str = "cpu"):
    with torch.device(device):
        return reference_module("topformer").TopFormer(num_classes=150).eval()


def test_parameters_equal_the_authors_count():
    reference = _reference("meta")
    assert n_params(reference) == PARAMS
    assert analyze(MODEL).audit.params == PARAMS


@pytest.mark.parametrize("size", [(512, 512), (100, 150)])
def test_macs_equal_flop_counter_on_the_reference(size):
    audit = analyze(MODEL, size).audit
    assert meta_flops(_reference("meta"), size) == 2 * audit.macs


def test_the_published_figure_is_reproduced():
    """Table 1 of the paper and the authors' README: TopFormer-T, 0.53 GFLOPs (multiply-adds) at 512x512."""
    macs = analyze(MODEL, (512, 512)).audit.macs
    assert round(macs / 1e9, 2) == 0.53


def test_the_authors_readme_figure_fits_mmcv_counting_with_batch_norm():
    """The authors' README gives TopFormer-T at 512x512 0.6 GFLOPs, where the MACs are 0.53 G.
    Their tools/get_flops.py runs mmcv's get_model_complexity_info, which counts a conv's MACs plus
    one per output element for its bias, one per output element of every nn.ReLU / nn.ReLU6 module
    (h_sigmoid's included), two per element of an affine nn.BatchNorm2d, and nothing for
    ``torch.matmul``, ``F.interpolate`` or ``F.adaptive_avg_pool2d``. The audit's layers, added up
    under those rules, give 0.577 G, which rounds to 0.6. Without the batch norms (mmcv looks modules
    up by exact type and has no entry for the SyncBatchNorm of the authors' config) they give 0.545 G,
    which would print as 0.5; so the published figure fits a count with plain BatchNorm2d."""
    analysis = analyze(MODEL, (512, 512))
    total = 0
    for layer in analysis.audit.layers:
        elements = layer.output_shape[0] * layer.output_shape[1] * layer.output_shape[2]
        if layer.op == "conv":
            total += layer.macs + (elements if analysis.graph.node(layer.name).attrs["bias"] else 0)
        elif layer.op in ("relu", "relu6", "hardsigmoid"):
            total += elements
        elif layer.op == "bn":
            total += 2 * elements
    batch_norm = sum(2 * layer.output_shape[0] * layer.output_shape[1] * layer.output_shape[2]
                     for layer in analysis.audit.layers if layer.op == "bn")
    assert round(total / 1e9, 1) == 0.6 != round(analysis.audit.macs / 1e9, 1)
    assert round((total - batch_norm) / 1e9, 1) == 0.5


def test_compiled_module_counts_like_the_audit_on_meta():
    compiled = compile_model(MODEL, (128, 192))
    meta = copy.deepcopy(compiled.module).to("meta")
    assert meta_flops(meta, (128, 192)) == 2 * compiled.audit.macs


@pytest.mark.parametrize("size", [(64, 96), (100, 150)])
def test_outputs_equal_the_reference(size, tmp_path):
    reference = _reference()
    randomise_(reference, seed=size[0] * 1000 + size[1])
    weights = saved_checkpoint(reference.state_dict(), tmp_path / "topformer_tiny_ade20k.pth",
                               "mmseg:topformer_tiny", meta={"iter": 160000})
    compiled = create_model(MODEL, input_size=size, weights=weights).eval()
    assert n_params(compiled) == compiled.audit.params == PARAMS
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = reference(x)
        got = compiled(x)
    assert got.shape == expected.shape == (2, 150, -(-size[0] // 8), -(-size[1] // 8))
    assert expected.abs().max() > 0.1, "outputs too small for the tolerance to mean anything"
    assert (got - expected).abs().max().item() <= TOLERANCE


def test_the_layout_renames_every_key_of_the_authors_checkpoint(tmp_path):
    """Strict: a key of the checkpoint that the layout leaves unmatched, or a tensor it leaves
    empty, fails the import with a report instead of loading part of the model."""
    from rtseg_compiler.weights.importer import import_weights
    state = _reference("cpu").state_dict()
    weights = saved_checkpoint(state, tmp_path / "topformer_tiny_ade20k.pth", "mmseg:topformer_tiny")
    compiled = compile_model(MODEL, (64, 96))
    report = import_weights(compiled, weights)
    assert report.ok and not report.unused
    assert len(report.loaded) == len(state) == len(compiled.module.state_dict())
