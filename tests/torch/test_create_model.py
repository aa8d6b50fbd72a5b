"""``create_model``: a trainable module with its audit, taps and spec texts attached (rtseg_compiler/api.py).

The taps' channels and strides are the compiler's inference; here they meet real tensors.
"""

from __future__ import annotations

import pytest
import torch

from rtseg_compiler import Feature, analyze, compile_model, create_model

MODEL = "skipnet_mobilenet_v1"


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_module_is_trainable_and_carries_its_audit() -> None:
    net = create_model(MODEL, num_classes=19, input_size=(128, 256))
    assert net.training
    assert _params(net) == net.audit.params == analyze(MODEL, (128, 256), 19).audit.params
    assert net.audit.macs == analyze(MODEL, (128, 256), 19).audit.macs
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    out = net(torch.randn(2, 3, 128, 256))
    assert out.shape == (2, 19, 128, 256)
    assert not torch.equal(before, bn.running_mean)  # train mode: batch norm learns its statistics
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_spec_holds_the_texts_it_was_built_from() -> None:
    net = create_model(MODEL)
    assert set(net.spec) == {"model", "encoder", "meta"}
    assert "kind: model" in net.spec["model"] and "kind: encoder" in net.spec["encoder"]
    assert "kind: meta" in net.spec["meta"]


@pytest.mark.parametrize("name", ["skipnet_mobilenet_v1", "unet_resnet18", "lraspp_mobilenet_v3_large",
                                  "fast_scnn"])
def test_features_only_returns_each_tap_as_feature_info_says(name: str) -> None:
    size = (96, 128)
    backbone = create_model(name, features_only=True, input_size=size)
    full = create_model(name, input_size=size)
    assert backbone.training
    info = backbone.feature_info
    assert [f.stride for f in info] == sorted(f.stride for f in info)  # shallowest first
    maps = backbone(torch.randn(2, 3, *size))  # 2: a pyramid pool's 1x1 batch norm needs it in train mode
    assert list(maps) == info.names()
    for feature, (tap, x) in zip(info, maps.items()):
        assert tap == feature.name
        assert x.shape[1] == feature.channels
        assert (x.shape[2], x.shape[3]) == (-(-size[0] // feature.stride), -(-size[1] // feature.stride))
    # The same taps as the whole model's, and the backbone's weights are the model's encoder weights.
    assert list(info) == [f for f in full.feature_info if f.name in maps]
    full_keys = full.state_dict()
    for key, value in backbone.state_dict().items():
        assert key in full_keys and full_keys[key].shape == value.shape
    assert _params(backbone) == backbone.audit.params


def test_tap_module_names_are_layers_of_the_compiled_graph() -> None:
    net = create_model("unet_resnet18")
    layers = {n.meta.get("layer") for n in net.graph.nodes}
    assert net.feature_info.module_name() and set(net.feature_info.module_name()) <= layers


def test_choose_taps_by_name_or_index() -> None:
    by_name = create_model("resnet18", features_only=True, taps=["stride16", "stride8"], input_size=(64, 64))
    maps = by_name(torch.randn(1, 3, 64, 64))
    assert list(maps) == ["stride16", "stride8"]
    assert [f.name for f in by_name.feature_info] == ["stride16", "stride8"]
    every = create_model("resnet18", features_only=True, input_size=(64, 64)).feature_info
    by_index = create_model("resnet18", features_only=True, out_indices=(-2, -1), input_size=(64, 64))
    assert by_index.feature_info.names() == every.names()[-2:]
    # Layers after the deepest chosen tap are not built.
    shallow = create_model("resnet18", features_only=True, taps=["stride4"], input_size=(64, 64))
    assert _params(shallow) < _params(by_name)


def test_timm_style_accessors() -> None:
    info = create_model(MODEL, features_only=True).feature_info
    assert info.channels() == [f.channels for f in info] and info.reduction() == [f.stride for f in info]
    assert isinstance(info[0], Feature)


def test_params_go_to_the_spec_that_declares_them() -> None:
    thin = create_model("unet_mobilenet_v1", width=0.5, input_size=(64, 64))
    same = compile_model("unet_mobilenet_v1", (64, 64), encoder_params={"width": 0.5})
    assert thin.audit.params == same.audit.params < create_model("unet_mobilenet_v1").audit.params


@pytest.mark.parametrize("kwargs, words", [
    ({"colour": 1}, "'colour' is not a parameter"),
    ({"features_only": True, "taps": ["stride64"]}, "no tap 'stride64'"),
    ({"features_only": True, "out_indices": [9]}, "out of range"),
    ({"features_only": True, "taps": ["stride8"], "out_indices": [1]}, "not both"),
    ({"taps": ["stride8"]}, "features_only=True"),
])
def test_arguments_that_do_not_fit_say_why(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        create_model("unet_mobilenet_v1", **kwargs)


def test_pretrained_backbone_equals_torchvision_features(tmp_path) -> None:
    """features_only + pretrained: the taps are torchvision ResNet-18's stage outputs, exactly."""
    from torchvision_compat import import_torchvision

    reference = import_torchvision().models.resnet18(weights=None).eval()
    with torch.no_grad():
        for bn in (m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), weights)
    backbone = create_model("skipnet_resnet18", features_only=True, taps=["stride8", "stride16", "stride32"],
                            pretrained=f"torchvision:resnet18@{weights}").eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        maps = backbone(x)
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        expected = {}
        for name, stage in (("stride4", reference.layer1), ("stride8", reference.layer2),
                            ("stride16", reference.layer3), ("stride32", reference.layer4)):
            y = stage(y)
            expected[name] = y
    assert list(maps) == ["stride8", "stride16", "stride32"]
    for name, value in maps.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["unet_resnet18", "lraspp_mobilenet_v3_large"])
def test_deepcopy_and_pickle_keep_the_module_and_what_it_carries(name: str) -> None:
    """EMA copies deepcopy a model, torch.save(model) pickles it: both keep audit, taps and spec,
    and the pickled module (re-traced by torch.fx on load, in-place adds included) computes the same."""
    import copy
    import io

    net = create_model(name, input_size=(64, 96)).eval()
    twin = copy.deepcopy(net)
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        want = net(x)
        for other in (twin, loaded):
            assert other.audit == net.audit and other.spec == net.spec
            assert list(other.feature_info) == list(net.feature_info)
            got = other(x)
            if isinstance(want, dict):
                assert all(torch.equal(want[k], got[k]) for k in want)
            else:
                assert torch.equal(want, got)


def test_the_encoder_is_callable_and_returns_its_taps() -> None:
    """``net.encoder(x)`` (SMP's habit): every tap, from the network's own encoder weights."""
    net = create_model("unet_resnet18", input_size=(64, 96)).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        taps = net.encoder(x)
    by_name = {f.name: f for f in net.feature_info}
    assert set(taps) == set(by_name)
    for name, value in taps.items():
        assert value.shape[1] == by_name[name].channels
        assert value.shape[2] == -(-64 // by_name[name].stride)
    assert net.encoder.conv1 is net.get_submodule("encoder.conv1")  # shared, not copied
    assert list(net.state_dict()) == list(compile_model("unet_resnet18", (64, 96)).module.state_dict())


def test_outputs_main_and_in_chans() -> None:
    """The README's example: the main output alone, for a 4-channel (RGB-D) input."""
    net = create_model("skipnet_mobilenet_v1", outputs="main", in_chans=4, input_size=(64, 96), num_classes=5)
    out = net(torch.randn(2, 4, 64, 96))
    assert out.shape == (2, 5, 64, 96)
    assert net.audit.input[1] == 4
    first = net.get_submodule("encoder.conv1")
    assert first.weight.shape[1] == 4
    with pytest.raises(ValueError, match="in_chans"):
        create_model("skipnet_mobilenet_v1", in_chans=0)


@pytest.mark.parametrize("in_chans", [1, 4, 6])
def test_in_chans_adapts_pretrained_first_conv_weights_as_timm_does(tmp_path, in_chans: int) -> None:
    """One channel: the RGB kernel summed, so a grey image gives the RGB network's answer. More:
    R, G, B repeated, scaled by 3/in_chans; for a multiple of 3 an image whose channels are all
    equal then also gives the RGB network's answer (for 4 the kernel alone is checked)."""
    rgb = create_model("resnet18", input_size=(64, 64)).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in rgb.parameters():
            p.normal_(0, 0.1)
    weights = tmp_path / "r18.pt"
    torch.save(rgb.state_dict(), weights)
    rgb = create_model("resnet18", input_size=(64, 64), pretrained=str(weights)).eval()
    other = create_model("resnet18", input_size=(64, 64), pretrained=str(weights), in_chans=in_chans).eval()
    kernel = rgb.get_submodule("encoder.conv1").weight
    adapted = other.get_submodule("encoder.conv1").weight
    if in_chans == 1:
        torch.testing.assert_close(adapted, kernel.sum(dim=1, keepdim=True))
    else:
        expected = kernel.repeat(1, 2, 1, 1)[:, :in_chans] * (3 / in_chans)
        torch.testing.assert_close(adapted, expected)
    if in_chans % 3 and in_chans != 1:
        return
    grey = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        want = rgb.encoder(grey.expand(1, 3, 64, 64))
        got = other.encoder(grey.expand(1, in_chans, 64, 64))
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4)


def test_classifier_logits_are_n_by_classes_and_the_audit_unchanged() -> None:
    net = create_model("imagenet_resnet18", input_size=(64, 64)).eval()
    compiled = compile_model("imagenet_resnet18", (64, 64))
    x = torch.randn(2, 3, 64, 64)
    compiled.module.load_state_dict(net.state_dict())
    with torch.no_grad():
        logits, maps = net(x), compiled.module(x)
    assert logits.shape == (2, 1000) and maps.shape == (2, 1000, 1, 1)
    assert torch.equal(logits, maps.flatten(1))
    assert net.audit == compiled.audit


def test_auxiliary_heads_are_returned_in_eval_mode_too_unless_left_out() -> None:
    """A deliberate choice (README): one output structure in train and eval, as torchvision's
    segmentation models; ``outputs="main"`` builds the network without its auxiliary heads."""
    net = create_model("bisenet_v1_resnet18", input_size=(64, 96))
    x = torch.randn(2, 3, 64, 96)
    train_out = net(x)
    with torch.no_grad():
        eval_out = net.eval()(x)
    assert list(train_out) == list(eval_out) == ["out", "aux16", "aux32"]
    main = create_model("bisenet_v1_resnet18", input_size=(64, 96), outputs="main").eval()
    with torch.no_grad():
        assert isinstance(main(x), torch.Tensor)
    assert main.audit.params < net.audit.params


def test_a_spec_text_builds_and_the_module_carries_the_texts_it_read() -> None:
    from conftest import SPECS
    from rtseg_compiler import SpecSource

    text = "kind: model\nencoder: mobilenet_v1\nmeta: skipnet\nnum_classes: 5\ninput: [64, 96]\n"
    net = create_model(SpecSource("mine/model.yaml", text), width=0.5)
    assert net.spec["model"] == text
    assert net.spec["encoder"] == (SPECS / "encoders" / "mobilenet_v1.yaml").read_text(encoding="utf-8")
    pair = create_model(encoder="mobilenet_v1", meta="skipnet", num_classes=5, input_size=(64, 96), width=0.5)
    assert net.audit.params == pair.audit.params and net.audit.macs == pair.audit.macs


def test_features_only_keeps_a_tap_whose_layer_a_false_when_removed(write_spec) -> None:
    """A tap on a layer whose shape-time ``when:`` is false reads that layer's input, with or without a head.

    ``r`` is absent (16 channels are not over 100), so ``stride4`` is the map ``c`` writes; the
    encoder alone must still return it, as the whole network's ``.encoder`` view does.
    """
    write_spec("enc.yaml", """
        kind: encoder
        name: tiny
        doc: a tap on a layer whose when is false at shape time
        input: [64, 64]
        blocks:
          b:
            params: {out: ~}
            layers:
              - {name: c, op: conv, out: out, kernel: 3, stride: 2}
              - {name: r, op: relu, when: "in_channels > 100"}
        layers:
          - {name: stem, op: conv, out: 8, kernel: 3, stride: 2}
          - {name: s2, block: b, out: 16}
        taps: {stride2: stem, stride4: s2.r}
        """)
    model = write_spec("model.yaml", """
        kind: model
        name: tiny_seg
        doc: the encoder above with a one-conv head
        encoder: enc.yaml
        meta: meta.yaml
        num_classes: 4
        input: [64, 64]
        """)
    write_spec("meta.yaml", """
        kind: meta
        name: head
        doc: one conv on the stride-4 tap
        requires: [stride4]
        layers:
          - {name: score, op: conv, input: encoder.stride4, out: num_classes, kernel: 1}
        output: score
        """)
    image = torch.zeros(1, 3, 64, 64)
    whole = create_model(model)
    backbone = create_model(model, features_only=True)
    assert list(backbone(image)) == list(whole.encoder(image)) == ["stride2", "stride4"]
    assert backbone(image)["stride4"].shape == (1, 16, 16, 16)
    picked = create_model(model, features_only=True, taps=["stride4"])
    assert [f.name for f in picked.feature_info] == ["stride4"]
