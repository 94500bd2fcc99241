"""Reverse lookup on the committed demo store: exemplars find their own neurons, files and dataset ids
look up alike, and bad images are refused with one clear message."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from precompute.core.uploads import ImageRejected, decode_image

DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="module")
def lookup():
    from precompute.lookup import Lookup
    return Lookup(DEMO)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "precompute", "lookup", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.numerics
def test_exemplars_find_their_own_neuron_and_mostly_their_own_facet(lookup):
    """The README's number: 200 exemplar images sampled from the demo store (seed 0)."""
    from precompute.lookup import check_exemplars
    found = check_exemplars(lookup, n=200, top=10, seed=0)
    # the ranking is as good as any that sees only the image (the ceiling: an fc7 exemplar is an exemplar of
    # a median 13 fc7 units, and was drawn through any of them alike)
    assert found["own_neuron_in_top"] >= found["ceiling"] - 0.03
    assert all(row["own_neuron_in_top"] >= 0.9 for row in found["layers"].values() if row["ceiling"] >= 0.95)
    assert found["stored_facet_nearest"] >= 0.8 and found["stored_facet_nearest"] >= 4 * found["chance_facet"]
    assert list(found["layers"]) == ["conv1", "conv2", "conv3", "fc6", "fc7"]   # fc8: 10 units, trivially top 10


def test_a_result_ranks_units_by_percentile_and_names_a_facet(lookup):
    (result,) = lookup(lookup.pixels_of_id(0)[None], ["image 0"], top=10)
    assert result.predicted_label == "Ankle boot"                       # Fashion-MNIST's first training image
    assert list(result.layers) == ["conv1", "conv2", "conv3", "fc6", "fc7", "fc8"]
    for layer, hits in result.layers.items():
        assert len(hits) == 10
        shares = [hit.percentile for hit in hits]
        assert shares == sorted(shares, reverse=True) and 0 <= shares[-1] <= shares[0] <= 1
        assert all(hit.facet is not None for hit in hits)
        assert all((hit.position is None) == (layer.startswith("fc")) for hit in hits)
    neuron = result.class_neuron
    assert (neuron.layer, neuron.unit, neuron.label) == ("fc8", 9, "Ankle boot") and neuron.percentile > 0
    assert result.layers["conv3"][0].crop_png is not None              # the receptive field it fired in


@pytest.mark.numerics
def test_the_cli_looks_up_a_file_as_the_dataset_image_it_is(lookup, tmp_path):
    pixels = lookup.pixels_of_id(17)
    path = tmp_path / "seventeen.png"
    Image.fromarray((pixels[0].numpy() * 255).round().astype(np.uint8)).save(path)
    by_file = run_cli("--store", str(DEMO), str(path), "--json", "--top", "3")
    by_id = run_cli("--store", str(DEMO), "--id", "17", "--json", "--top", "3")
    assert by_file.returncode == 0 and by_id.returncode == 0, by_file.stderr + by_id.stderr
    file_result, id_result = json.loads(by_file.stdout)[0], json.loads(by_id.stdout)[0]
    assert file_result["layers"] == id_result["layers"] and file_result["name"].endswith("seventeen.png")
    text = run_cli("--store", str(DEMO), "--id", "17", "--top", "2")
    assert text.returncode == 0 and "of its exemplars at or below" in text.stdout and "class neuron" in text.stdout


@pytest.mark.parametrize("args, message", [
    (["{tmp}/notes.png"], "is not an image"),
    (["{tmp}/cut.png"], "could not be decoded"),
    (["{tmp}/missing.png"], "no image file"),
    (["--id", "60000"], "image id 60000 is out of range: the store's dataset has ids 0..59999"),
    ([], "give image files, --id N"),
])
def test_bad_images_are_one_clear_line(tmp_path, args, message):
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "cut.png").write_bytes(png_bytes(Image.new("RGB", (64, 64), "red"))[:60])
    result = run_cli("--store", str(DEMO), *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_uploads_are_decoded_within_limits():
    good = png_bytes(Image.new("L", (28, 28), 200))
    assert decode_image(good).size == (28, 28)
    with pytest.raises(ImageRejected, match="the limit is 1 MB"):
        decode_image(good + b"\0" * (1 << 20))
    bomb = png_bytes(Image.new("L", (5000, 5000)))                    # 25 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    with pytest.raises(ImageRejected, match="5000 x 5000 pixels; the limit is"):
        decode_image(bomb)
    with pytest.raises(ImageRejected, match="is empty"):
        decode_image(b"")
