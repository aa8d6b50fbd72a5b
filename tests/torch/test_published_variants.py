"""Zoo encoders with public ImageNet weights compute the published function with one parameter.

MobileNet v1 is the one zoo encoder whose default differs from its checkpoint: the paper's ReLU
against timm's ReLU6 (mobilenetv1_100). ``act="relu6"`` closes the gap; the encoder's default
``conv_bias: false`` already matches. timm is built with ``pretrained=False`` (nothing is fetched),
its batch norms randomised so that a misplaced tensor shows, and its state dict goes through the
encoder's declared layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rtseg_compiler import create_model
from torchvision_compat import import_torchvision


def _timm_mobilenet_v1() -> torch.nn.Module:
    import_torchvision()  # timm imports torchvision
    timm = pytest.importorskip("timm")
    reference = timm.create_model("mobilenetv1_100", pretrained=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return reference.eval()


def test_mobilenet_v1_relu6_encoder_is_timms_mobilenetv1_100(tmp_path: Path) -> None:
    reference = _timm_mobilenet_v1()
    path = tmp_path / "mobilenetv1_100.pth"
    torch.save(reference.state_dict(), path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 3
    source = f"timm:mobilenetv1_100@{path}"
    published = create_model("mobilenet_v1", features_only=True, taps=["stride32"], act="relu6",
                              pretrained=source).eval()
    paper = create_model("mobilenet_v1", features_only=True, taps=["stride32"], pretrained=source).eval()
    with torch.no_grad():
        expected = reference.forward_features(x)
        torch.testing.assert_close(published(x)["stride32"], expected, rtol=1e-5, atol=1e-5)
        # The paper's ReLU is another function of the same weights (large inputs pass 6).
        assert not torch.allclose(paper(x)["stride32"], expected, rtol=1e-5, atol=1e-5)


def test_segmentation_model_takes_the_published_encoder(tmp_path: Path) -> None:
    """The default model with the published encoder: act=relu6 and no conv bias, weights loaded."""
    reference = _timm_mobilenet_v1()
    path = tmp_path / "mobilenetv1_100.pth"
    torch.save(reference.state_dict(), path)
    net = create_model("skipnet_mobilenet_v1", act="relu6", conv_bias=False, input_size=(64, 64),
                       pretrained=f"timm:mobilenetv1_100@{path}")
    assert torch.equal(net.state_dict()["encoder.ds13.pw.weight"],
                       reference.state_dict()["blocks.4.1.conv_pw.weight"])
    assert type(net.get_submodule("encoder.conv1_relu")) is torch.nn.ReLU6
