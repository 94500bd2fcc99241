"""The README's screenshot: the demo's Sneaker neuron on the Neuron page, served by streamlit, shot by Chromium.

    python benchmarks/readme_screenshot.py      # writes docs/figures/neuron_page.png

Needs Debian's chromium (as the browser tests do).
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def serve() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("error: streamlit did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/figures/neuron_page.png")
    parser.add_argument("--query", default="layer=fc8&unit=7", help="the Neuron page's address (default: Sneaker)")
    parser.add_argument("--height", type=int, default=1500, help="pixels of the page to keep, from its top")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    proc, url = serve()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": args.height})
            page.goto(f"{url}/neuron?{args.query}", wait_until="networkidle")
            page.get_by_text("t-SNE map of the exemplars").wait_for(timeout=60_000)
            time.sleep(2)   # let the images and the chart finish drawing
            page.screenshot(path=args.out)
            browser.close()
    finally:
        proc.terminate()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
