"""Where the dashboard's store is, and how it was asked for.

Resolution order: `streamlit run dashboard/app.py -- --store DIR`, then the environment
variable ATLAS_STORE, then the committed demo store data/demo/.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_STORE = REPO_ROOT / "data" / "demo"


def store_dir(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--store")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    chosen = args.store or os.environ.get("ATLAS_STORE") or DEMO_STORE
    return Path(chosen).expanduser().resolve()
