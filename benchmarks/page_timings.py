"""Print how long each dashboard page takes to render (first load, then cached), via AppTest.

    python benchmarks/page_timings.py [--store DIR]
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import logging  # noqa: E402

from streamlit.testing.v1 import AppTest  # noqa: E402

logging.getLogger("streamlit").setLevel(logging.ERROR)   # bare-mode warnings are noise here

PAGES = [
    ("Atlas fc8", None, {"layer": "fc8"}),
    ("Atlas fc6 page 3", None, {"layer": "fc6", "page": "3"}),
    ("Neuron fc8/7", "views/neuron.py", {"layer": "fc8", "unit": "7"}),
    ("Neuron conv3/5", "views/neuron.py", {"layer": "conv3", "unit": "5"}),
    ("SQL example", "views/sql_console.py", {"q": "SELECT layer, unit, label, facet_diversity FROM neurons "
                                                  "ORDER BY facet_diversity DESC NULLS LAST LIMIT 50"}),
    ("Layers", "views/layers.py", {}),
    ("Atlas conv3 (crops)", None, {"layer": "conv3"}),
    ("Lookup of image 17", "views/lookup.py", {"id": "17"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", help="store folder (default: data/demo)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.store:
        os.environ["ATLAS_STORE"] = args.store
    sys.argv = [sys.argv[0]]
    print(f"{'page':22s} {'first load':>11s} {'cached (median)':>16s}")
    for name, view, params in PAGES:
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        at.run()
        if view:
            at.switch_page(view)
        at.query_params.update(params)
        start = time.perf_counter()
        at.run()
        first = time.perf_counter() - start
        again = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            at.run()
            again.append(time.perf_counter() - start)
        assert not at.exception, at.exception
        print(f"{name:22s} {first:10.2f}s {statistics.median(again):15.2f}s")


if __name__ == "__main__":
    main()
