"""User mistakes: one clear line on stderr, exit code 2, no traceback."""
import subprocess
import sys

import pytest

from conftest import ROOT


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "precompute", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (("layers", "--model", "resnet9000"), "unknown model 'resnet9000'; valid models: demo"),
    (("build", "--out", "{tmp}", "--layers", "fc9"), "unknown layer 'fc9'; valid layers: conv1, conv2, conv3, fc6, fc7, fc8"),
    (("build", "--out", "{tmp}", "--layers", "fc8", "--units", "10"), "unit 10 is out of range for layer 'fc8': valid units are 0..9"),
    (("build", "--out", "{tmp}", "--layers", "fc8", "--data", "/nonexistent"), "data folder '/nonexistent' does not exist"),
    (("build", "--out", "{tmp}", "--layers", "fc8", "--data", "/"), "Fashion-MNIST not found in /"),
    (("build", "--out", "{tmp}", "--weights", "{tmp}/missing.pt"), "does not exist"),
    (("build", "--out", "{tmp}", "--weights", "{garbage}"), "cannot read weights file"),
    (("build", "--out", "{tmp}", "-k", "50", "--top-n", "20"), "k=50 is larger than the exemplar set (top-n=20)"),
    (("build", "--out", "{tmp}", "--method", "deepdream"), "unknown method 'deepdream'; valid methods: mfv, center-bias, noise"),
    (("build", "--out", "{tmp}", "--precision", "fp8"), "unknown precision 'fp8'; valid precisions: fp32, bf16, auto"),
    (("build", "--out", "{tmp}", "--device", "tpu"), "unknown device 'tpu'"),
    (("build", "--out", "{tmp}", "--scale-range", "1.5"), "--scale-range must be in [0, 1) (a random scale of 1 +- it), got 1.5"),
    (("build", "--out", "{tmp}", "--facet-pull", "-1"), "--facet-pull must be 0 (none) or more, got -1"),
    (("build", "--out", "{tmp}", "--seed-penalty", "-3"), "--seed-penalty must be 0 (none) or more, got -3"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    args = [a.format(tmp=tmp_path, garbage=garbage) for a in args]
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_mismatched_weights_file(tmp_path):
    import torch
    weights = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), weights)
    result = run("build", "--out", str(tmp_path), "--weights", str(weights))
    assert result.returncode == 2 and "does not match the model" in result.stderr and "Traceback" not in result.stderr


def test_layers_lists_kinds_and_unit_counts():
    result = run("layers", "--model", "demo")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:-1]}
    assert list(rows) == ["conv1", "conv2", "conv3", "fc6", "fc7", "fc8"]
    assert rows["conv1"][1:4] == ["conv", "hidden", "32"]
    assert rows["fc7"][1:4] == ["fc", "embedding", "256"]
    assert rows["fc8"][1:4] == ["fc", "logits", "10"]


def test_help_reads_well():
    result = run("build", "--help")
    assert result.returncode == 0
    for option in ("--layers", "--units", "--method", "--top-n", "--steps", "--seed", "--device", "--out"):
        assert option in result.stdout
