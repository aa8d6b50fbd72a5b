"""Fast-SCNN and BiSeNet V1 specs against hand-written PyTorch references.

``tests/reference/fast_scnn.py`` and ``tests/reference/bisenet_v1.py`` are written from the
papers as plain ``nn.Module`` code, independently of the compiler. For each network and two
input sizes, 96x192 and 100x164 (not a multiple of 32: 100 -> 50 -> 25 -> 13 -> 7 -> 4, so
every resize-to-a-tap and every PPM bin sees uneven maps), the test

* copies the reference's state dict into the compiled module through an explicit key map
  (every key used exactly once, shapes equal, ``strict=True``);
* requires equal parameter counts (reference, compiled module, analytic audit);
* requires the analytic FLOPs to equal ``FlopCounterMode`` on both modules;
* requires outputs equal within 1e-5 in eval mode, with every weight and batch-norm
  statistic randomised so that no BN is an identity.

Key maps: the references group conv + BN as ``P.conv``/``P.bn`` (or ResNet's ``conv1``/``bn1``),
the specs name layers ``L``/``L_bn`` or, inside a ``conv_bn_relu`` block, ``L.conv``/``L.bn``.
Each map below is a list of full-match regular expressions on the module path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from reference_checks import n_params, randomise_, reference_module  # noqa: E402
from rtseg_compiler import compile_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "specs" / "models"
SIZES = [(96, 192), (100, 164)]
NUM_CLASSES = 19
TOLERANCE = 1e-5


# ---------------------------------------------------------------------------
# Key maps: reference module path -> compiled module path


Rules = list[tuple[str, Callable[[re.Match], str] | str]]

FAST_SCNN_RULES: Rules = [
    # learning to downsample: ConvBNReLU P -> layers L (conv) and L_bn
    (r"learning_to_downsample\.conv\.conv", "encoder.conv1"),
    (r"learning_to_downsample\.conv\.bn", "encoder.conv1_bn"),
    (r"learning_to_downsample\.(dsconv\d)\.(dw|pw)\.conv", r"encoder.\1.\2"),
    (r"learning_to_downsample\.(dsconv\d)\.(dw|pw)\.bn", r"encoder.\1.\2_bn"),
    # bottleneck groups: one 'repeat: 3, start: 0' use each, numbered like nn.Sequential
    (r"global_feature_extractor\.(bottleneck\d\.\d)\.(expand|dw|project)\.conv", r"encoder.\1.\2"),
    (r"global_feature_extractor\.(bottleneck\d\.\d)\.(expand|dw|project)\.bn", r"encoder.\1.\2_bn"),
    # pyramid pooling: branch k pools to bins (1, 2, 3, 6)[k]
    (r"global_feature_extractor\.ppm\.branches\.(\d)\.(conv|bn)",
     lambda m: f"encoder.ppm{(1, 2, 3, 6)[int(m[1])]}.conv" + ("_bn" if m[2] == "bn" else "")),
    (r"global_feature_extractor\.ppm\.out\.conv", "encoder.ppm_out"),
    (r"global_feature_extractor\.ppm\.out\.bn", "encoder.ppm_out_bn"),
    # feature fusion and classifier
    (r"feature_fusion\.dwconv\.conv", "head.ffm_dw"),
    (r"feature_fusion\.dwconv\.bn", "head.ffm_dw_bn"),
    (r"feature_fusion\.conv_(lower|higher)\.conv", r"head.ffm_\1"),
    (r"feature_fusion\.conv_(lower|higher)\.bn", r"head.ffm_\1_bn"),
    (r"classifier\.(dsconv\d)\.(dw|pw)\.conv", r"head.\1.\2"),
    (r"classifier\.(dsconv\d)\.(dw|pw)\.bn", r"head.\1.\2_bn"),
    (r"classifier\.conv", "head.classifier"),
]

BISENET_RULES: Rules = [
    # ResNet-18 (the encoder): stage 1 is a 'repeat: 2' use (layer1.1, layer1.2); stages 2-4
    # are two uses each (layerN_1 with the projection shortcut, layerN_2)
    (r"cp\.backbone\.(conv1|bn1)", r"encoder.\1"),
    (r"cp\.backbone\.layer1\.(\d)\.(conv\d|bn\d)", lambda m: f"encoder.layer1.{int(m[1]) + 1}.{m[2]}"),
    (r"cp\.backbone\.layer([234])\.(\d)\.(conv\d|bn\d)",
     lambda m: f"encoder.layer{m[1]}_{int(m[2]) + 1}.{m[3]}"),
    (r"cp\.backbone\.layer([234])\.0\.downsample\.0", r"encoder.layer\1_1.downsample"),
    (r"cp\.backbone\.layer([234])\.0\.downsample\.1", r"encoder.layer\1_1.downsample_bn"),
    # context path (ConvBNReLU P.conv/P.bn -> conv_bn_relu use L.conv/L.bn)
    (r"cp\.(arm16|arm32)\.conv\.(conv|bn)", r"head.\1.\2"),
    (r"cp\.(arm16|arm32)\.conv_atten", r"head.\1.atten"),
    (r"cp\.(arm16|arm32)\.bn_atten", r"head.\1.atten_bn"),
    (r"cp\.(conv_head16|conv_head32)\.(conv|bn)", r"head.\1.\2"),
    (r"cp\.conv_avg\.(conv|bn)", r"head.context.\1"),
    # spatial path
    (r"sp\.conv([123])\.(conv|bn)", r"head.sp\1.\2"),
    (r"sp\.conv_out\.(conv|bn)", r"head.sp_out.\1"),
    # feature fusion
    (r"ffm\.convblk\.(conv|bn)", r"head.ffm_conv.\1"),
    (r"ffm\.conv1", "head.ffm_squeeze"),
    (r"ffm\.conv2", "head.ffm_excite"),
    # heads
    (r"(head|head16|head32)\.conv\.(conv|bn)",
     lambda m: f"head.{dict(head='out_head', head16='aux16_head', head32='aux32_head')[m[1]]}.{m[2]}"),
    (r"(head|head16|head32)\.conv_out",
     lambda m: f"head.{dict(head='out_head', head16='aux16_head', head32='aux32_head')[m[1]]}.classifier"),
]


def map_state_dict(reference: dict, rules: Rules) -> dict:
    """The reference's state dict under the compiled module's keys; each rule must full-match."""
    out = {}
    for key, value in reference.items():
        path, leaf = key.rsplit(".", 1)
        for pattern, replacement in rules:
            match = re.fullmatch(pattern, path)
            if match:
                new = replacement(match) if callable(replacement) else match.expand(replacement)
                break
        else:
            raise AssertionError(f"no key-map rule for reference key {key!r}")
        assert f"{new}.{leaf}" not in out, f"two reference keys map to {new}.{leaf}"
        out[f"{new}.{leaf}"] = value
    return out


# ---------------------------------------------------------------------------
# Helpers


def count_flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops()


def as_dict(y) -> dict:
    return y if isinstance(y, dict) else {"out": y}


def check_equal(reference: torch.nn.Module, spec: Path, rules: Rules, size: tuple[int, int],
                **compile_kwargs) -> dict:
    """Every check of the module docstring for one network and input size; returns the outputs."""
    randomise_(reference, seed=size[0] * 1000 + size[1])  # outputs' std about 0.4 (Fast-SCNN) to 2 (BiSeNet)
    reference.eval()
    compiled = compile_model(spec, input_size=size, **compile_kwargs)
    module, audit = compiled.module, compiled.audit

    mapped = map_state_dict(reference.state_dict(), rules)
    target = module.state_dict()
    assert set(mapped) == set(target), (f"missing in reference: {sorted(set(target) - set(mapped))[:5]}, "
                                        f"extra: {sorted(set(mapped) - set(target))[:5]}")
    for key, value in mapped.items():
        assert value.shape == target[key].shape, f"{key}: {tuple(value.shape)} vs {tuple(target[key].shape)}"
    module.load_state_dict(mapped, strict=True)
    module.eval()

    assert n_params(reference) == n_params(module) == audit.params

    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(7))
    flops_one = audit.flops  # the audit is for one image
    assert count_flops(module, x[:1]) == flops_one
    assert count_flops(reference, x[:1]) == flops_one

    with torch.no_grad():
        want, got = as_dict(reference(x)), as_dict(module(x))
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape == (2, NUM_CLASSES, *size)
        assert want[name].abs().max() > 0.1, "outputs too small for the tolerance to mean anything"
        err = (got[name] - want[name]).abs().max().item()
        assert err <= TOLERANCE, f"{name}: max abs difference {err:.3g} > {TOLERANCE}"
    return want


# ---------------------------------------------------------------------------
# Tests


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these maps are small, and on a loaded 2-core machine two threads
    made each forward pass about 8x slower (0.26 s vs 1.97 s for Fast-SCNN at 2x128x256)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fast_scnn_matches_reference(size):
    ref = reference_module("fast_scnn").FastSCNN(NUM_CLASSES)
    check_equal(ref, MODELS / "fast_scnn.yaml", FAST_SCNN_RULES, size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bisenet_v1_matches_reference(size):
    """The spec's three outputs (out, aux16, aux32), in order, equal the reference's."""
    ref = reference_module("bisenet_v1").BiSeNetV1(NUM_CLASSES, aux=True)
    outputs = check_equal(ref, MODELS / "bisenet_v1_resnet18.yaml", BISENET_RULES, size)
    assert list(outputs) == ["out", "aux16", "aux32"]


def test_bisenet_v1_main_output_matches_reference_without_aux_heads():
    """outputs="main" drops the auxiliary heads: the reference built without them matches,
    parameters, FLOPs and all."""
    ref = reference_module("bisenet_v1").BiSeNetV1(NUM_CLASSES, aux=False)
    outputs = check_equal(ref, MODELS / "bisenet_v1_resnet18.yaml", BISENET_RULES, SIZES[1],
                          outputs="main")
    assert list(outputs) == ["out"]


def test_reference_parameter_counts():
    """The counts the reference docstrings and the model files quote (19 classes)."""
    assert n_params(reference_module("fast_scnn").FastSCNN(19)) == 1_138_051
    bisenet = reference_module("bisenet_v1")
    assert n_params(bisenet.BiSeNetV1(19, aux=True)) == 13_392_384
    assert n_params(bisenet.BiSeNetV1(19, aux=False)) == 13_242_240
    assert n_params(bisenet.ResNet18()) == 11_176_512


def test_key_map_rejects_unknown_keys():
    with pytest.raises(AssertionError, match="no key-map rule"):
        map_state_dict({"nonexistent.weight": torch.zeros(1)}, FAST_SCNN_RULES)
