"""SegFormer-B0 (specs/models/segformer_b0.yaml) against transformers' SegformerForSemanticSegmentation.

The reference is built from ``SegformerConfig(num_labels=19)`` (the B0 configuration; nothing is
downloaded). Checked:

* parameters: 3,719,027 on both sides, and the audit equals the compiled module's count;
* MACs: the audit equals torch's FlopCounterMode / 2 on the reference, run on the meta device
  (where SDPA and the eager products are both counted): 17,757,110,272 at 512x1024 and
  120,957,435,904 at 1024x2048;
* outputs: with the reference's weights copied over (Linear weights reshaped to 1x1 convs) and
  batch-norm statistics randomised, eval-mode logits agree within 1e-5 at 64x128 and at 100x150,
  which is not a multiple of 32.

Skipped where transformers is not installed (``pip install -e .[transformers]``).
"""

from __future__ import annotations

import copy
import re

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from conftest import SPECS  # noqa: E402
from reference_checks import (meta_flops, n_params, perturb_parameters_,  # noqa: E402
                              random_batch_norm_statistics_)
from rtseg_compiler import compile_model  # noqa: E402
from rtseg_compiler.pipeline import analyze  # noqa: E402
from torchvision_compat import import_torchvision  # noqa: E402

MODEL = SPECS / "models" / "segformer_b0.yaml"


@pytest.fixture(scope="module")
def transformers():
    import_torchvision()  # transformers imports torchvision, whose extension may not load here
    return pytest.importorskip("transformers")


def _reference(transformers, device: str = "cpu"):
    config = transformers.SegformerConfig(num_labels=19)
    with torch.device(device):
        return transformers.SegformerForSemanticSegmentation(config).eval()


#: transformers' keys (5.x layout) -> the compiled model's, applied in order.
_RENAMES = [
    (r"^segformer\.stages\.(\d+)\.", lambda m: f"encoder.stage.{int(m.group(1)) + 1}."),
    (r"\.patch_embeddings\.proj\.", ".patch_embed."),
    (r"\.patch_embeddings\.layer_norm\.", ".patch_norm."),
    (r"\.blocks\.(\d+)\.", r".block.\1."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.([qkv])_proj\.", r".attn.\1."),
    (r"\.attention\.o_proj\.", ".attn.proj."),
    (r"\.attention\.sequence_reduction\.sequence_reduction\.", ".attn.sr."),
    (r"\.attention\.sequence_reduction\.layer_norm\.", ".attn.sr_norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".dwconv."),
    (r"\.mlp\.(fc[12])\.", r".\1."),
    (r"\.layer_norm\.", ".norm."),
    (r"^decode_head\.linear_projections\.(\d)\.proj\.", lambda m: f"head.proj{4 << int(m.group(1))}."),
    (r"^decode_head\.linear_fuse\.", "head.fuse."),
    (r"^decode_head\.batch_norm\.", "head.fuse_bn."),
    (r"^decode_head\.classifier\.", "head.classifier."),
]


def _converted(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, new)
        if value.dim() == 2 and target[new].dim() == 4:  # nn.Linear -> 1x1 conv
            value = value[:, :, None, None]
        out[new] = value
    return out


def test_parameters_and_macs_equal_the_reference(transformers):
    reference = _reference(transformers, "meta")
    assert n_params(reference) == 3_719_027
    for size, macs in [((512, 1024), 17_757_110_272), ((1024, 2048), 120_957_435_904)]:
        audit = analyze(MODEL, size).audit
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            reference(pixel_values=torch.empty(1, 3, *size, device="meta"))
        assert counter.get_total_flops() == 2 * macs == 2 * audit.macs
        assert audit.params == 3_719_027


@pytest.mark.parametrize("size", [(64, 128), (100, 150)])
def test_outputs_equal_the_reference(transformers, size):
    torch.manual_seed(0)
    reference = _reference(transformers)
    random_batch_norm_statistics_(reference)  # decode_head.batch_norm, the only one
    perturb_parameters_(reference, std=0.05)  # LayerNorm's 1 and 0 would hide a swapped weight and bias
    compiled = compile_model(MODEL, size)
    target = compiled.module.state_dict()
    compiled.module.load_state_dict(_converted(reference.state_dict(), target), strict=True)
    assert n_params(compiled.module) == compiled.audit.params == 3_719_027
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference(pixel_values=x).logits
        got = compiled.module(x)
    assert got.shape == expected.shape == (2, 19, -(-size[0] // 4), -(-size[1] // 4))
    assert (got - expected).abs().max().item() <= 1e-5


def test_compiled_module_counts_like_the_reference_on_meta(transformers):
    compiled = compile_model(MODEL, (128, 256))
    meta = copy.deepcopy(compiled.module).to("meta")
    assert meta_flops(meta, (128, 256)) == 2 * compiled.audit.macs


def test_a_saved_transformers_checkpoint_imports_through_the_declared_layout(transformers, tmp_path):
    """save_pretrained writes the Hub's key layout (segformer.encoder.block.0.0.attention.self.query
    ...); the encoder spec's ``transformers:segformer_b0`` layout renames it, reshapes every Linear
    into its 1x1 conv, and fills the all-MLP head."""
    pytest.importorskip("safetensors")
    from rtseg_compiler.weights.importer import import_weights
    torch.manual_seed(1)
    reference = _reference(transformers)
    perturb_parameters_(reference, std=0.05)
    reference.decode_head.batch_norm.running_var.uniform_(0.5, 2.0)
    reference.save_pretrained(tmp_path)
    checkpoint = tmp_path / "model.safetensors"
    compiled = compile_model(MODEL, (96, 160))
    report = import_weights(compiled, f"transformers:segformer_b0@{checkpoint}")
    assert report.ok and not report.unused
    assert len(report.reshaped) == 4 * 2 * 6 + 4  # q, k, v, proj, fc1, fc2 per block; 4 head projections
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        diff = (compiled.module(x) - reference(pixel_values=x).logits).abs().max().item()
    assert diff <= 1e-5
