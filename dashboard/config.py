"""Where the dashboard's store is and which mode it runs in, and how they were asked for.

Store: `streamlit run dashboard/app.py -- --store DIR`, else ATLAS_STORE, else data/demo/.
Mode: `-- --mode public`, else ATLAS_MODE, else "local". In public mode the atlas is read-only
for everyone: browsing and SQL work, reruns are open only to holders of the admin token kept
in Streamlit secrets (`admin_token` in .streamlit/secrets.toml), and off when there is none.
Lookup (the reverse lookup page, which runs the model on visitors' images): `-- --lookup on|off`,
else ATLAS_LOOKUP, else on in local mode and off in public mode: there the admin turns it on.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_STORE = REPO_ROOT / "data" / "demo"


MODES = ("local", "public")
SWITCHES = ("on", "off")


def _args(argv: list[str] | None):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--store")
    parser.add_argument("--mode")
    parser.add_argument("--lookup")
    return parser.parse_known_args(sys.argv[1:] if argv is None else argv)[0]


def store_dir(argv: list[str] | None = None) -> Path:
    chosen = _args(argv).store or os.environ.get("ATLAS_STORE") or DEMO_STORE
    return Path(chosen).expanduser().resolve()


def mode(argv: list[str] | None = None) -> str:
    """"local" or "public"; anything else is returned as given for the app to report."""
    return (_args(argv).mode or os.environ.get("ATLAS_MODE") or "local").strip().lower()


def lookup_setting(argv: list[str] | None = None) -> str:
    """"on", "off", or "" when not set (the mode decides); anything else is returned as given."""
    return (_args(argv).lookup or os.environ.get("ATLAS_LOOKUP") or "").strip().lower()
