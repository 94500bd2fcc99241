"""Every torchvision classifier as the atlas reads it: listed layers by kind, and what is left out.

    python benchmarks/architectures.py [NAME ...]     # default: every torchvision classifier

For each architecture (random weights, its own input size): the seconds to load it and read its
layouts, the listed layers by kind (conv, conv read channels-last, tokens, fc) and the number of
repeated blocks among them, and the conv and linear layers whose output is not read as conv,
tokens or fc (windowed attention internals), which are left out of the list.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torchvision.models as tvm  # noqa: E402

from precompute.engine.models import _conv_or_linear, _trace, load_model  # noqa: E402


def survey(arch: str) -> str:
    start = time.perf_counter()
    spec = load_model(f"torchvision:{arch}")
    seconds = time.perf_counter() - start
    kinds = Counter(info.kind + ("-last" if info.kind == "conv" and info.layout.channels_last else "")
                    for info in spec.layers.values())
    graph, name_of = _trace(spec.module)
    unread = sum(1 for node, name in name_of.items() if _conv_or_linear(spec.module, node) and spec.layouts[name] is None)
    blocks = sum(info.role == "block" for info in spec.layers.values())
    return (f"| {arch} | {seconds:.1f} | {kinds['conv']} | {kinds['conv-last']} | {kinds['tokens']} | {kinds['fc']} "
            f"| {blocks} | {unread} |")


def main(names: list[str]) -> None:
    print("| architecture | load s | conv | conv, channels-last | tokens | fc | of them blocks | conv/linear not read |")
    print("|---|---|---|---|---|---|---|---|")
    for arch in names or tvm.list_models(module=tvm):
        print(survey(arch), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="torchvision classifiers (default: every one)")
    main(parser.parse_args().names)
