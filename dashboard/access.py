"""Who may rerun (everyone in local mode; in public mode only holders of the admin token) and
whether lookups run (they need torch, and in public mode the admin's say-so)."""
from __future__ import annotations

import hmac
import importlib.util

import streamlit as st

from dashboard.config import MODES, SWITCHES, lookup_setting, mode


def check_mode() -> str:
    """The mode, or stop the page with a message naming the bad value and the valid ones."""
    current = mode()
    if current not in MODES:
        st.error(f"Unknown ATLAS_MODE {current!r}; valid modes: {', '.join(MODES)}.")
        st.stop()
    return current


def admin_token() -> str | None:
    try:
        token = st.secrets.get("admin_token")
    except Exception:   # no secrets file at all: no token
        return None
    return str(token) if token else None


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison, so response time says nothing about how much of a guess was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


def reruns_unlocked() -> bool:
    """True when this session may start reruns; otherwise shows why not (and a token box if one can help)."""
    if check_mode() == "local" or st.session_state.get("admin"):
        return True
    expected = admin_token()
    if expected is None:
        st.info("Reruns are off on this public atlas. Browsing and SQL work as usual.", icon=":material/lock:")
        return False
    st.info("This public atlas is read-only. Reruns are open to its administrators.", icon=":material/lock:")
    given = st.text_input("Admin token", type="password")
    if given and token_matches(given, expected):
        st.session_state["admin"] = True
        st.rerun()
    elif given:
        st.error("That token is not valid.")
    return False


def lookup_blocked() -> str | None:
    """Why this server runs no lookups (None: it does)."""
    setting = lookup_setting()
    if setting and setting not in SWITCHES:
        return f"Unknown ATLAS_LOOKUP {setting!r}; valid values: {', '.join(SWITCHES)}."
    if setting == "off" or (not setting and check_mode() == "public"):
        return ("Lookups are off on this atlas: they run the model on visitors' images, which its administrator "
                "turns on with `--lookup on` or ATLAS_LOOKUP=on.")
    if importlib.util.find_spec("torch") is None:
        return "Lookups need the model, and this deployment has no torch: install the full requirements.txt."
    return None
