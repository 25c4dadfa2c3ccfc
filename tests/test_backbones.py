"""Every registered backbone gets these tests for free (parametrized over the registry)."""

import pytest
import torch

from sarbridge.runtime.errors import SarbridgeError
from sarbridge.train.models.backbones import (
    build_backbone,
    list_backbones,
    load_backbone_weights,
    load_imagenet_weights,
    register_backbone,
    save_backbone_weights,
)


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_backward(name, in_channels):
    torch.manual_seed(0)
    model = build_backbone(name, in_channels=in_channels)
    x = torch.randn(2, in_channels, 64, 64, requires_grad=True)
    feats = model(x)
    assert len(feats) == 3
    for f, c, s in zip(feats, model.out_channels, model.strides, strict=True):
        assert f.shape == (2, c, 64 // s, 64 // s)
    sum(f.mean() for f in feats).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_edge_backbone_fits_a_board_budget():
    model = build_backbone("edge")
    assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_registry_refuses_duplicates_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("edge")(lambda in_channels=1: None)
    with pytest.raises(SarbridgeError, match="unknown backbone 'vgg'"):
        build_backbone("vgg")


def test_local_imagenet_file_with_rgb_stem_summed(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(ref.state_dict(), path)
    model = build_backbone("resnet18", in_channels=1, imagenet_weights=path)
    torch.testing.assert_close(model.body.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.body.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(SarbridgeError, match="no key matches"):
        load_imagenet_weights(build_backbone("edge"), path)
    with pytest.raises(SarbridgeError, match="never downloaded"):
        build_backbone("resnet18", imagenet_weights=tmp_path / "missing.pth")


def test_backbone_weights_roundtrip(tmp_path):
    a, b = build_backbone("edge"), build_backbone("edge")
    path = save_backbone_weights(a, tmp_path / "sar.pt", source="test")
    meta = load_backbone_weights(b, path)
    assert meta["source"] == "test" and meta["in_channels"] == 1
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    with pytest.raises(SarbridgeError, match="not 'resnet18'"):
        load_backbone_weights(build_backbone("resnet18"), path)
