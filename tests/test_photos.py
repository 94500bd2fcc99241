"""The class folders of shipped photos that the 224 px evidence, sweeps and contact sheet run on."""
import numpy as np
import pytest
from PIL import Image

from precompute.evidence.photos import PHOTOS, load_photo, make_photo_folders


@pytest.mark.parametrize("name", list(PHOTOS))
def test_every_photo_loads_as_rgb(name):
    photo = load_photo(*PHOTOS[name])
    assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.uint8 and min(photo.shape[:2]) >= 256


def test_folders_hold_disjoint_train_and_heldout_crops_of_the_chosen_classes_only(tmp_path):
    classes = ("tripod", "espresso")   # a grey photo and a colour one
    train, heldout = make_photo_folders(tmp_path, train=3, heldout=2, classes=classes)
    assert sorted(p.name for p in train.iterdir()) == sorted(classes) == sorted(p.name for p in heldout.iterdir())
    first = np.asarray(Image.open(train / "tripod" / "000.png"))
    assert first.shape == (256, 256, 3)
    train_crops = {(train / c / f"{i:03d}.png").read_bytes() for c in classes for i in range(3)}
    heldout_crops = {(heldout / c / f"{i:03d}.png").read_bytes() for c in classes for i in range(2)}
    assert not train_crops & heldout_crops, "held-out crops are drawn apart from the training crops"

    make_photo_folders(tmp_path, train=3, heldout=2, classes=("espresso",))
    assert [p.name for p in train.iterdir()] == ["espresso"], "another class list's folders do not linger"


def test_an_unknown_class_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="'goldfish'.*Egyptian cat"):
        make_photo_folders(tmp_path, classes=("goldfish",))
