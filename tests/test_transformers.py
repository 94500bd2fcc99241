"""Vision transformers and channels-last layers (torchvision's ViT, Swin, MaxViT, ConvNeXt with
random weights): units are channels, read the way the network computes them."""
import pytest
import torch
from torch import nn

from conftest import query
from precompute.engine.activations import scan
from precompute.pipeline import BuildConfig, build_atlas, list_layers
from precompute.core.errors import AtlasError
from precompute.engine.imagefolder import FolderSet
from precompute.engine.models import load_model
from precompute.engine.synthesis import Schedule, Stage, measure, render
from test_dashboard import page, texts

VIT_BLOCK, SWIN_STAGE = "encoder.layers.encoder_layer_1.add_1", "features.3.1.add_1"   # 768 tokens, 192 channels-last
STAGE_WIDTHS = {"vit_b_16": {768}, "swin_t": {96, 192, 384, 768}, "convnext_tiny": {96, 192, 384, 768},
                "maxvit_t": {64, 128, 256, 512}}


@pytest.mark.parametrize("arch", list(STAGE_WIDTHS))
def test_every_listed_layer_has_as_many_units_as_channels(arch):
    spec = load_model(f"torchvision:{arch}")
    rows = list_layers(f"torchvision:{arch}")
    for row in rows:
        module = dict(spec.module.named_modules()).get(row["layer"])
        width = getattr(module, "out_channels", getattr(module, "out_features", None))
        if width is not None:   # a conv or linear layer: its channels, whichever axis they are on
            assert row["n_units"] == width, row
    blocks = [row for row in rows if row["role"] == "block"]
    assert {row["n_units"] for row in blocks} == STAGE_WIDTHS[arch]
    assert all(row["kind"] == ("tokens" if arch == "vit_b_16" else "conv") for row in blocks)
    if arch == "vit_b_16":
        assert len(blocks) == 12 and blocks[1]["layer"] == VIT_BLOCK and blocks[1]["shape"] == "768x14x14"
        assert [r["layer"] for r in rows if r["alias"] == "fc7"] == ["getitem_5"]   # the class token after the final norm
        assert sum(r["n_units"] == 3072 for r in rows) == 12                         # each block's MLP hidden layer


def brute_force_top(module: nn.Module, path: str, pixels: torch.Tensor, read) -> torch.Tensor:
    """Images x units, read by a forward hook on the raw module (no layouts involved)."""
    seen = {}
    handle = module.get_submodule(path).register_forward_hook(lambda m, i, out: seen.update(out=out))
    with torch.no_grad():
        module(pixels)
    handle.remove()
    return read(seen["out"].float())


@pytest.mark.parametrize("arch, layer, path, read", [
    # ViT: channels are the last axis; the class token (token 0) is left out of the max, and read alone by :cls
    ("vit_b_16", VIT_BLOCK, "encoder.layers.encoder_layer_1", lambda out: out[:, 1:].amax(1)),
    ("vit_b_16", VIT_BLOCK + ":cls", "encoder.layers.encoder_layer_1", lambda out: out[:, 0]),
    ("swin_t", SWIN_STAGE, "features.3", lambda out: out.amax((1, 2))),    # B x H x W x C
])
def test_scan_top_images_match_a_brute_force_read_of_the_module(photo_folder, arch, layer, path, read):
    spec = load_model(f"torchvision:{arch}")
    data = FolderSet(photo_folder, size=224, max_images=12, workers=1)
    result = scan(spec, data, [layer], top_n=3, device=torch.device("cpu"), batch_size=6).layers[layer]
    pixels = torch.cat([p for _, p in data.batches(12, torch.device("cpu"))])
    expected = brute_force_top(spec.module, path, spec.preprocess(pixels), read)   # images x units
    assert result.top_values.shape == (expected.shape[1], 3)
    torch.testing.assert_close(result.top_values, expected.T.topk(3, dim=1).values, rtol=1e-4, atol=1e-4)
    assert torch.equal(result.top_indices[:, 0], expected.argmax(0))


def test_a_class_token_is_named_only_where_there_is_one():
    spec = load_model("torchvision:vit_b_16")
    assert spec.layer(VIT_BLOCK + ":cls").shape == (768,)
    with pytest.raises(AtlasError, match="'conv_proj' has no class token"):
        spec.layer("conv_proj:cls")
    with pytest.raises(AtlasError, match="not read as conv"):   # inside attention: heads x tokens x tokens
        spec.layer("encoder.layers.encoder_layer_1.self_attention")


def test_a_vit_at_a_size_it_was_not_built_for_is_one_clear_error():
    with pytest.raises(AtlasError, match="does not run on a 3x112x112 input: AssertionError: Wrong image height"):
        load_model("torchvision:vit_b_16", input_size=112)


@pytest.mark.parametrize("arch", ["mnasnet0_5", "shufflenet_v2_x0_5"])
def test_global_mean_pooling_leaves_the_classifier_an_fc_layer(arch):
    logits = next(row for row in list_layers(f"torchvision:{arch}") if row["alias"] == "fc8")   # after x.mean([2, 3])
    assert (logits["kind"], logits["n_units"]) == ("fc", 1000)


@pytest.mark.parametrize("arch, layer, path, at_center", [
    ("vit_b_16", VIT_BLOCK, "encoder.layers.encoder_layer_1", lambda out: out[:, 1 + 7 * 14 + 7]),   # patch (7, 7)
    ("swin_t", SWIN_STAGE, "features.3", lambda out: out[:, 14, 14]),
])
def test_synthesis_raises_the_unit_at_the_central_patch(arch, layer, path, at_center):
    spec = load_model(f"torchvision:{arch}")
    units, init = torch.tensor([0, 5, 9]), torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    raw = lambda images: brute_force_top(spec.module, path, spec.preprocess(images), at_center).gather(1, units[:, None])[:, 0]
    torch.testing.assert_close(measure(spec, layer, units, init)["act"], raw(init))   # the unit read where it is
    small_steps = Schedule((Stage(3, (0.002, 0.002), (0.0, 0.0)),), jitter=0, margin=0)
    final = render(spec, layer, units, init, small_steps, keys=torch.arange(3))
    assert (raw(final) > raw(init)).all()


@pytest.mark.parametrize("arch, layer", [("vit_b_16", VIT_BLOCK), ("swin_t", SWIN_STAGE),
                                         ("convnext_tiny", "features.3.0.add"),
                                         ("maxvit_t", "blocks.1.layers.0.layers.grid_attention.departition_op.reshape_1")])
def test_a_build_on_a_block_writes_facets_the_dashboard_shows(tmp_path, photo_folder, monkeypatch, arch, layer):
    out = tmp_path / arch
    build_atlas(BuildConfig(store=str(out), model=f"torchvision:{arch}", data=str(photo_folder), layers=(layer,),
                            units=(0, 5), top_n=6, k=2, m=2, steps=4, device="cpu"))
    facets = query(out, "SELECT unit, count(image_png), count(*) FROM facets GROUP BY unit ORDER BY unit")
    assert [unit for unit, *_ in facets] == [0, 5] and all(images == n >= 1 for _, images, n in facets)
    monkeypatch.setenv("ATLAS_STORE", str(out))
    at = page("neuron", layer=layer, unit=5)
    assert at.title[0].value.startswith(f"{layer}/5") and "Facets" in texts(at)
