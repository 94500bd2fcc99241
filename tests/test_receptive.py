"""Receptive fields: the geometry walk agrees with the input gradient of the units, and crops cut what
a unit sees, alike in the build (torch) and the dashboard (PIL)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import query
from dashboard.images import crop as crop_png
from precompute.core.fields import ReceptiveField
from precompute.engine.images import from_png, to_png
from precompute.engine.models import generic_spec, load_model
from precompute.engine.receptive import crop, gradient_field, receptive_fields


def _as_tuple(field):
    return field and (field.size, field.stride, field.offset)


def test_demo_fields_follow_the_architecture_and_the_gradient(demo_spec):
    fields = receptive_fields(demo_spec, ["conv1", "conv2", "conv3", "fc6"])
    # conv 3x3 pad 1 (3 px); pool 2 then conv 3x3 (8 px every 2); pool 2 then conv 3x3 (18 px every 4)
    assert _as_tuple(fields["conv1"]) == ((3, 3), (1, 1), (-1, -1))
    assert _as_tuple(fields["conv2"]) == ((8, 8), (2, 2), (-3, -3))
    assert _as_tuple(fields["conv3"]) == ((18, 18), (4, 4), (-7, -7))
    assert fields["fc6"] is None and {f.method for f in fields.values() if f} == {"geometry"}
    for layer in ("conv1", "conv2", "conv3"):
        assert _as_tuple(gradient_field(demo_spec, layer)) == _as_tuple(fields[layer]), layer


@pytest.mark.parametrize("layer", ["_conv_stem.conv2d", "_blocks.1._depthwise_conv.conv2d", "_blocks.4.add",
                                   "_blocks.9.add", "_blocks.11._depthwise_conv.conv2d"])
def test_efficientnet_lite0_fields_match_the_gradient_check(layer):
    """TF 'same' padding (an explicit pad before each strided conv), residual adds and fields that
    grow past the 224 px input (the gradient runs on a canvas wide enough not to clip them)."""
    spec = load_model("efficientnet-lite0")
    field = receptive_fields(spec, [layer])[layer]
    assert field.method == "geometry"
    canvas = 32 * ((field.size[0] + 4 * field.stride[0]) // 32 + 1)
    assert _as_tuple(gradient_field(spec, layer, canvas=canvas)) == _as_tuple(field)


class Upsampling(nn.Module):
    """An operation the geometry walk does not know (interpolate): the gradient decides."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.conv2(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.head(x.mean((2, 3)))


class Excited(nn.Module):
    """Squeeze-and-excitation: a global pool scales every position, so every unit after it sees everything."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.after = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv(x)
        x = self.after(x * torch.sigmoid(self.squeeze(x)))
        return self.head(x.mean((2, 3)))


def test_an_unknown_operation_falls_back_to_the_gradient_and_a_global_one_sees_everything():
    up = generic_spec("up", Upsampling(), "0" * 64, 32, (0.5,) * 3, (0.5,) * 3)
    fields = receptive_fields(up, ["conv1", "conv2"])
    assert fields["conv1"].method == "geometry" and _as_tuple(fields["conv1"]) == ((5, 5), (2, 2), (-2, -2))
    assert fields["conv2"].method == "gradient" and fields["conv2"].size[0] > 5
    excited = generic_spec("se", Excited(), "0" * 64, 32, (0.5,) * 3, (0.5,) * 3)
    fields = receptive_fields(excited, ["conv", "after"])
    assert _as_tuple(fields["conv"]) == ((3, 3), (1, 1), (-1, -1)) and fields["after"] is None


def test_a_crop_keeps_the_field_size_filling_past_the_edge_and_both_crops_agree():
    field = ReceptiveField((8, 8), (2, 2), (-3, -3), "geometry")
    pixels = torch.rand(3, 28, 28)
    corner = crop(pixels, field, 0, 0)                      # rows and columns -3..4: 3 of fill, 5 of image
    assert corner.shape == (3, 8, 8)
    assert torch.equal(corner[:, 3:, 3:], pixels[:, :5, :5]) and bool((corner[:, :3] == 0.5).all())
    middle = crop(pixels, field, 7, 7)
    assert torch.equal(middle, pixels[:, 11:19, 11:19])
    whole = crop(pixels, ReceptiveField((851, 851), (32, 32), (-394, -394), "geometry"), 3, 3)
    assert torch.equal(whole, pixels)                        # a field wider than the image: all of it
    png = to_png(pixels)
    for y, x in [(0, 0), (13, 13), (7, 0)]:                  # the dashboard's PIL crop of a stored PNG
        assert torch.equal(from_png(crop_png(png, field, y, x)), from_png(to_png(crop(from_png(png), field, y, x))))


@pytest.mark.numerics
def test_the_build_stores_fields_positions_crops_and_facet_codes(small_store, demo_spec, fashion_train):
    out, summary = small_store
    run = summary.run_ids["mfv"]
    fields = dict(query(out, f"SELECT layer, rf_size FROM layers WHERE run_id = '{run}'"))
    assert fields == {"conv2": [8, 8], "fc6": None, "fc8": None}
    rows = query(out, f"""SELECT unit, image_id, pos_y, pos_x, crop_png FROM exemplars
                          WHERE run_id = '{run}' AND layer = 'conv2' AND crop_png IS NOT NULL""")
    assert rows and not query(out, f"SELECT 1 FROM exemplars WHERE run_id = '{run}' AND layer = 'fc6' AND pos_y IS NOT NULL")
    field = ReceptiveField((8, 8), (2, 2), (-3, -3), "geometry")
    for unit, image_id, y, x, png in rows[:12]:
        pixels = fashion_train.pixels([image_id])
        with torch.no_grad():
            out_map = demo_spec.extractor(("conv2",))(demo_spec.preprocess(pixels))["conv2"][0, unit]
        assert divmod(int(out_map.flatten().argmax()), 14) == (y, x)
        assert torch.equal(from_png(png), from_png(to_png(crop(pixels[0], field, y, x))))
    codes = query(out, f"SELECT layer, unit, facet, mean_code FROM facets WHERE run_id = '{run}'")
    assert codes and all(len(code) == demo_spec.embedding_dim for *_, code in codes)
    assert not query(out, "SELECT 1 FROM facets f JOIN runs r USING (run_id) WHERE r.method <> 'mfv' AND mean_code IS NOT NULL")


@pytest.mark.parametrize("arch, layer, expected", [
    ("resnet18", "layer3.1.add", ((211, 211), (16, 16), (-105, -105))),   # stem, max pool, residual blocks
    ("efficientnet_b0", "features.1.0.block.0", ((7, 7), (2, 2), (-3, -3))),   # a leaf Conv2dNormActivation
    ("efficientnet_b0", "features.2.0.block.0", None),     # after the first squeeze-and-excitation block
    ("vit_b_16", "conv_proj", ((16, 16), (16, 16), (0, 0))),              # the patch embedding
    ("vit_b_16", "encoder.layers.encoder_layer_1.add_1", None),           # self-attention: every patch
    ("swin_t", "features.3.1.add_1", None),                                # shifted windows: no one moving box
])
def test_torchvision_architectures(arch, layer, expected):
    spec = load_model(f"torchvision:{arch}")
    field = receptive_fields(spec, [layer])[layer]
    assert _as_tuple(field) == expected
    if field is not None and arch != "vit_b_16":   # a ViT runs at its own input size only
        assert _as_tuple(gradient_field(spec, layer, canvas=2 * field.size[0] + 8 * field.stride[0])) == expected
