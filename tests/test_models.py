"""Real models: EfficientNet-Lite0 with its real ImageNet weights, torchvision architectures,
a user's own model, on small image folders built by the tests."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, query
from precompute.pipeline import BuildConfig, build_atlas, list_layers
from precompute.core.errors import AtlasError
from precompute.engine.models import imagenet_classes, load_model

CAT, ESPRESSO = imagenet_classes().index("Egyptian cat"), imagenet_classes().index("espresso")


@pytest.mark.numerics
def test_efficientnet_lite0_real_weights_end_to_end(tmp_path, photo_folder):
    out = tmp_path / "atlas"
    summary = build_atlas(BuildConfig(store=str(out), model="efficientnet-lite0", data=str(photo_folder),
                                      layers=("fc8",), units=(CAT, ESPRESSO), k=3, m=3, steps=30, device="cpu"))
    assert summary.skipped_files == 1                                     # the corrupt file, counted
    neurons = query(out, "SELECT unit, label, status, n_exemplars, k FROM neurons ORDER BY unit")
    assert [row[:4] for row in neurons] == [(CAT, "Egyptian cat", "ok", 16), (ESPRESSO, "espresso", "ok", 16)]
    assert all(1 <= k <= 3 for *_, k in neurons)   # fewer than k when a cluster under m = 3 was dissolved
    facets = query(out, "SELECT unit, act_init, act_final, top1_hit, size FROM facets")
    assert len(facets) == sum(k for *_, k in neurons) and min(size for *_, size in facets) >= 3
    assert all(final > init for _, init, final, _, _ in facets)          # synthesis raises the target logit
    assert sum(hit for *_, hit, _ in facets) >= len(facets) - 1           # and reaches top-1 for most facets
    (config,) = query(out, "SELECT config_json FROM runs")[0]
    config = json.loads(config)
    assert config["skipped_files"] == 1 and config["schedule"]["margin"] == 49
    assert query(out, "SELECT count(*), max(octet_length(png)) < 20000 FROM thumbnails")[0][0] >= 6


@pytest.mark.parametrize("arch, hidden", [("alexnet", "features.3"), ("resnet18", "layer2.0.conv1"),
                                          ("vgg11", "features.3"), ("mobilenet_v3_small", "features.1.block.0")])
def test_torchvision_architectures_with_random_weights(tmp_path, photo_folder, arch, hidden):
    rows = {row["layer"]: row for row in list_layers(f"torchvision:{arch}")}
    assert rows[hidden]["kind"] == "conv"
    logits = next(row for row in rows.values() if row["alias"] == "fc8")
    assert logits["n_units"] == 1000 and logits["role"] == "logits"
    out = tmp_path / arch
    small = dict(store=str(out), model=f"torchvision:{arch}", data=str(photo_folder), top_n=8, k=2, m=2, steps=4,
                 input_size=112, device="cpu")
    first = build_atlas(BuildConfig(layers=("fc8",), units=(1, CAT), **small))
    again = build_atlas(BuildConfig(layers=(hidden,), units=(0, 1), **small))   # extends the same run
    assert first.run_ids == again.run_ids
    neurons = query(out, "SELECT layer, unit FROM neurons ORDER BY layer, unit")
    assert neurons == sorted([(logits["layer"], 1), (logits["layer"], CAT), (hidden, 0), (hidden, 1)])
    # the class neuron clusters its class's images; class 1 (goldfish) has no folder: top-N images
    ex = dict(query(out, f"SELECT unit, n_exemplars FROM neurons WHERE layer = '{logits['layer']}'"))
    assert ex[CAT] == 16 and ex[1] == 8
    assert query(out, "SELECT count(*) FROM facets WHERE image_png IS NULL") == [(0,)]


def test_a_users_own_model(tmp_path, photo_folder, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "def build_net():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = load_model("mynets:build_net", input_size=64)
    assert spec.aliases == {"fc8": "6", "fc7": "5"} and spec.input_shape == (3, 64, 64)
    out = tmp_path / "atlas"
    build_atlas(BuildConfig(store=str(out), model="mynets:build_net", data=str(photo_folder), layers=("fc8", "0"),
                            top_n=10, k=2, m=2, steps=3, input_size=64, device="cpu"))
    # a 2-class model of a 2-class folder: the folder's class names label its class neurons
    assert query(out, "SELECT label FROM neurons WHERE layer = '6' ORDER BY unit") == [("Egyptian cat",), ("espresso",)]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "precompute", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.parametrize("args, message", [
    (("layers", "--model", "torchvision:resnet9000"), "unknown torchvision classifier 'resnet9000'"),
    (("build", "--model", "torchvision:resnet18", "--layers", "layer9", "--data", "{photos}", "--out", "{tmp}"),
     "unknown layer 'layer9'; valid layers: conv1, layer1.0.conv1"),
    (("build", "--model", "torchvision:resnet18", "--weights", "{alexnet}", "--data", "{photos}", "--out", "{tmp}"),
     "does not match the model"),
    (("build", "--model", "efficientnet-lite0", "--out", "{tmp}"), "needs --data DIR"),
    (("build", "--model", "efficientnet-lite0", "--data", "{tmp}/empty", "--out", "{tmp}"), "no images in"),
    (("layers", "--model", "nosuchpackage.models:build"), "cannot load model 'nosuchpackage.models:build'"),
])
def test_model_and_data_mistakes_are_one_clear_line(tmp_path, photo_folder, args, message):
    alexnet = tmp_path / "alexnet.pt"
    torch.save(load_model("torchvision:alexnet").module.state_dict(), alexnet)
    (tmp_path / "empty" / "someclass").mkdir(parents=True)
    result = run_cli(*[a.format(tmp=tmp_path, photos=photo_folder, alexnet=alexnet) for a in args])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_unknown_layer_is_reported_by_the_api_too():
    with pytest.raises(AtlasError, match="unknown layer 'nope'"):
        load_model("torchvision:resnet18").resolve("nope")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_demo_net_pools_before_relu_without_changing_a_bit(demo_spec, fashion_train, dtype):
    # DemoNet applies max-pool before ReLU because it is faster; atlases built with the
    # conventional order (ReLU, then pool) must stay reproducible: same outputs, same gradients.
    net = demo_spec.module
    def conventional(x):
        x = net.pool1(net.relu1(net.conv1(x)))
        x = net.pool2(net.relu2(net.conv2(x)))
        x = net.pool3(net.relu3(net.conv3(x)))
        return net.fc8(net.relu7(net.fc7(net.relu6(net.fc6(net.flatten(x))))))
    pixels = demo_spec.preprocess(fashion_train.images[:64].float().div(255)).requires_grad_(True)
    results = []
    for forward in (net, conventional):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logits = forward(pixels)
        (grad,) = torch.autograd.grad(logits.float().max(1).values.sum(), pixels)
        results.append((logits, grad))
    (ours, our_grad), (theirs, their_grad) = results
    assert torch.equal(ours, theirs) and torch.equal(our_grad, their_grad)
    assert our_grad.abs().sum() > 0
