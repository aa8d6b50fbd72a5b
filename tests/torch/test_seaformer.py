"""SeaFormer-T (specs/models/seaformer_tiny.yaml) against the hand-written reference.

``tests/reference/seaformer.py`` rewrites the authors' SeaFormer backbone and light head
(github.com/fudan-zvg/SeaFormer, seaformer-seg/) in plain torch with the authors' module names.
Checked:

* parameters: 1,667,318 with 150 classes, the authors' figure, on the reference, the compiled
  module and the audit;
* MACs: the audit equals torch's FlopCounterMode / 2 on the reference, run on the meta device,
  at 512x512 (562,569,216, the 0.56 G of the authors' code) and at 100x150;
* outputs: with the reference's weights copied over through the key map below (the positional
  embeddings reshaped from 1 x C x 16 to the param's 1 x C x 16 x 1 or 1 x C x 1 x 16) and every
  weight and batch-norm statistic randomised, eval-mode logits agree within 1e-5 at 128x192 and
  at 100x150 (not a multiple of 32 or 64: the stride-32 and stride-64 maps are 4x5 and 2x3, so
  the positional embeddings are resampled from 16 positions to 2, 3, 4 and 5). Neither size is
  square, so a row embedding used for the columns would not even fit;
* the ``mmseg:seaformer_tiny`` weights layout of the encoder spec, on a checkpoint saved with
  the reference's (the authors') keys.

None of it reads the strides the IR gives the squeezed C x H x 1 and C x 1 x W maps.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch.nn import functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from rtseg_compiler import compile_model  # noqa: E402
from rtseg_compiler.pipeline import analyze  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "specs" / "models" / "seaformer_tiny.yaml"
PARAMS = 1_667_318
SIZES = [(128, 192), (100, 150)]


def _reference_module():
    """Import tests/reference/seaformer.py by path (tests/ is not a package)."""
    name = "rtseg_reference_seaformer"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "reference" / "seaformer.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


#: The reference's inverted residuals (smbS.layerL) -> the spec's: the seven rows of the stem
#: are mv2.1 ... mv2.7, smb4 and smb5 open stage.1 and stage.2.
_ROWS = {(1, 1): "mv2.1", (1, 2): "mv2.2", (1, 3): "mv2.3", (2, 1): "mv2.4", (2, 2): "mv2.5",
         (3, 1): "mv2.6", (3, 2): "mv2.7", (4, 1): "stage.1.down", (5, 1): "stage.2.down"}


def _mv2(m: re.Match) -> str:
    row = (int(m["smb"]), int(m["layer"]))
    parts = ("dw", None, "project") if row == (1, 1) else ("expand", None, "dw", None, "project")
    return f"encoder.{_ROWS[row]}.{parts[int(m['index'])]}{'_bn' if m['kind'] == 'bn' else ''}."


#: Reference keys -> compiled keys, applied in order (each a substitution on the whole key).
_RENAMES = [
    (r"^backbone\.smb1\.stem_block\.0\.c\.", "encoder.stem."),
    (r"^backbone\.smb1\.stem_block\.0\.bn\.", "encoder.stem_bn."),
    (r"^backbone\.smb(?P<smb>\d)\.layer(?P<layer>\d)\.conv\.(?P<index>\d)\.(?P<kind>c|bn)\.", _mv2),
    (r"^backbone\.trans(\d)\.transformer_blocks\.(\d)\.", r"encoder.stage.\1.block.\2."),
    (r"\.attn\.(to_[qkv]|dwconv|pwconv)\.c\.", r".attn.\1."),
    (r"\.attn\.(to_[qkv]|dwconv|pwconv)\.bn\.", r".attn.\1_bn."),
    (r"\.attn\.proj\.1\.c\.", ".attn.proj."),
    (r"\.attn\.proj\.1\.bn\.", ".attn.proj_bn."),
    (r"\.attn\.proj_encode_(row|column)\.1\.c\.", r".attn.\1.encode."),
    (r"\.attn\.proj_encode_(row|column)\.1\.bn\.", r".attn.\1.encode_bn."),
    (r"\.attn\.pos_emb_(row|column)([qk])\.pos_embed$", r".attn.\1.\2_pos.weight"),
    (r"\.mlp\.(fc[12])\.c\.", r".\1."),
    (r"\.mlp\.(fc[12])\.bn\.", r".\1_bn."),
    (r"\.mlp\.dwconv\.", ".dwconv."),
    (r"^decode_head\.(fuse\d\.\w+|linear_fuse)\.conv\.", r"head.\1."),
    (r"^decode_head\.(fuse\d\.\w+|linear_fuse)\.bn\.", r"head.\1_bn."),
    (r"^decode_head\.conv_seg\.", "head.conv_seg."),
]


def _converted(state: dict, target: dict) -> dict:
    """The reference's state dict under the compiled module's keys; only the positional
    embeddings change shape (1 x C x 16 -> the param's 1 x C x 16 x 1 or 1 x C x 1 x 16)."""
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, new)
        assert new in target, f"{key} -> {new}: no such key in the compiled module"
        assert new not in out, f"{key} -> {new}: two reference keys map there"
        if value.shape != target[new].shape:
            assert new.endswith("_pos.weight") and value.numel() == target[new].numel(), (key, new)
            value = value.reshape(target[new].shape)
        out[new] = value
    return out


def _randomised_reference():
    """The reference with every weight perturbed and every BN's statistics random, so that no
    BN is an identity and no embedding is zero."""
    torch.manual_seed(0)
    reference = _reference_module().SeaFormerSeg(150).eval()
    for p in reference.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return reference


def test_parameters_and_macs_equal_the_reference():
    with torch.device("meta"):
        reference = _reference_module().SeaFormerSeg(150).eval()
    assert sum(p.numel() for p in reference.parameters()) == PARAMS
    for size in [(512, 512), (100, 150)]:
        audit = analyze(MODEL, size).audit
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            reference(torch.empty(1, 3, *size, device="meta"))
        assert counter.get_total_flops() == 2 * audit.macs
        assert audit.params == PARAMS


def test_the_published_figures_are_reproduced():
    """The authors' code gives 1,667,318 parameters and 0.56 G MACs at 512x512 (150 classes)."""
    audit = analyze(MODEL).audit  # the model's own input, 512x512
    assert audit.params == 1_667_318
    assert round(audit.macs / 1e9, 2) == 0.56


@pytest.mark.parametrize("size", SIZES)
def test_outputs_equal_the_reference(size):
    reference = _randomised_reference()
    compiled = compile_model(MODEL, size)
    target = compiled.module.state_dict()
    converted = _converted(reference.state_dict(), target)
    compiled.module.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in compiled.module.parameters()) == compiled.audit.params == PARAMS
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference(x)
        got = compiled.module(x)
    assert got.shape == expected.shape == (2, 150, -(-size[0] // 8), -(-size[1] // 8))
    assert (got - expected).abs().max().item() <= 1e-5


def test_full_resolution_logits_are_the_reference_resized():
    """``full_resolution: true`` resizes the stride-8 logits to the input, as mmseg does at inference."""
    size = (100, 150)
    reference = _randomised_reference()
    compiled = compile_model(MODEL, size, meta_params={"full_resolution": True})
    compiled.module.load_state_dict(_converted(reference.state_dict(), compiled.module.state_dict()))
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = F.interpolate(reference(x), size=size, mode="bilinear", align_corners=False)
        got = compiled.module(x)
    assert got.shape == (1, 150, *size)
    assert (got - expected).abs().max().item() <= 1e-5


def test_compiled_module_counts_like_the_audit_on_meta():
    compiled = compile_model(MODEL, (128, 192))
    meta = copy.deepcopy(compiled.module).to("meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.empty(1, 3, 128, 192, device="meta"))
    assert counter.get_total_flops() == 2 * compiled.audit.macs


def test_an_authors_checkpoint_imports_through_the_declared_layout(tmp_path):
    """The reference carries the authors' module names, so its state dict, saved as mmcv saves a
    training checkpoint (weights under ``state_dict``, next to ``meta``), has the keys of the
    released SeaFormer-T files. The encoder's ``mmseg:seaformer_tiny`` layout renames every one,
    reshapes the eight positional embeddings, and fills the light head."""
    from rtseg_compiler.weights.importer import import_weights
    reference = _randomised_reference()
    checkpoint = tmp_path / "seaformer_tiny_ade20k.pth"
    torch.save({"meta": {"iter": 160000}, "state_dict": reference.state_dict()}, checkpoint)
    size = (100, 150)
    compiled = compile_model(MODEL, size)
    report = import_weights(compiled, f"mmseg:seaformer_tiny@{checkpoint}")
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
def test_small_and_base_are_parameters_of_the_same_files(variant):
    encoder_params, meta_params = VARIANTS[variant]
    cfg = getattr(_reference_module(), variant)
    with torch.device("meta"):
        reference = _reference_module().SeaFormerSeg(150, cfg).eval()
    size = (512, 512)
    audit = analyze(MODEL, size, encoder_params=encoder_params, meta_params=meta_params).audit
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        reference(torch.empty(1, 3, *size, device="meta"))
    assert audit.params == sum(p.numel() for p in reference.parameters())
    assert 2 * audit.macs == counter.get_total_flops()
    torch.manual_seed(0)
    reference = _reference_module().SeaFormerSeg(150, cfg).eval()
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    compiled = compile_model(MODEL, (100, 150), encoder_params=encoder_params, meta_params=meta_params)
    compiled.module.load_state_dict(_converted(reference.state_dict(), compiled.module.state_dict()))
    x = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        assert (compiled.module(x) - reference(x)).abs().max().item() <= 1e-5


def _mmcv_style_macs(cfg: dict, size: tuple[int, int]) -> int:
    """What mmcv's get_model_complexity_info (the authors' tools/get_flops.py) adds up for the
    reference: conv MACs plus one per conv-bias output, two per batch-norm input element (affine),
    one per ReLU/ReLU6 output (h_sigmoid's ReLU6 included); no hook sees matmul or interpolate."""
    reference_module = _reference_module()
    with torch.device("meta"):
        net = reference_module.SeaFormerSeg(150, cfg).eval()
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
    saved, reference_module.h_sigmoid = reference_module.h_sigmoid, h_sigmoid
    try:
        with torch.no_grad():
            net(torch.empty(1, 3, *size, device="meta"))
    finally:
        reference_module.h_sigmoid = saved
    return total


@pytest.mark.parametrize("variant, readme_gflops", [("TINY", 0.6), ("SMALL", 1.1), ("BASE", 1.8)])
def test_the_readme_figures_are_mmcv_counts(variant, readme_gflops):
    """The authors' README gives 0.6, 1.1 and 1.8 "FLOPs" (G) for T, S and B at 512x512. They are
    mmcv's counts, which add batch norms, activations and biases to the convs' MACs and miss the
    attention products: SeaFormer-S's 1.03 G MACs would not round to 1.1."""
    assert round(_mmcv_style_macs(getattr(_reference_module(), variant), (512, 512)) / 1e9, 1) == readme_gflops
