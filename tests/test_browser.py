"""End to end in a real browser: streamlit serves the app, headless Chromium clicks through it."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import CHROMIUM, ROOT

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*extra, env=None):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode(errors="replace")[-2000:])
    return proc, url


def stop(proc):
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server():
    proc, url = start()
    yield url
    stop(proc)


@pytest.fixture(scope="module")
def public_server(tmp_path_factory):
    """Public mode over a copy of the demo store, with an admin token in a secrets file."""
    root = tmp_path_factory.mktemp("public")
    shutil.copytree(ROOT / "data" / "demo" / "parts", root / "store" / "parts")
    (root / "secrets.toml").write_text('admin_token = "let-me-in"\n')
    proc, url = start("--secrets.files", str(root / "secrets.toml"),
                      env={"ATLAS_MODE": "public", "ATLAS_STORE": str(root / "store")})
    yield url
    stop(proc)


def test_atlas_to_neuron_to_sql(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/?layer=fc8", wait_until="networkidle")
    page.get_by_role("heading", name="Atlas").wait_for(timeout=30_000)
    page.get_by_text("of 10 neurons in fc8 match").wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "atlas.png"))

    # click into a neuron card
    page.get_by_role("link", name="Sneaker").first.click()
    page.get_by_role("heading", name="Sneaker · fc8/7").wait_for(timeout=30_000)
    assert "unit=7" in page.url and "layer=fc8" in page.url
    page.get_by_text("t-SNE map of the exemplars").wait_for(timeout=30_000)
    assert page.locator("img").count() > 20          # facets, inits, exemplars
    page.screenshot(path=str(tmp_path / "neuron.png"), full_page=True)

    # run a SQL query typed into the box
    page.goto(f"{server}/sql", wait_until="networkidle")
    box = page.get_by_label("Query")
    box.wait_for(timeout=30_000)
    box.fill("SELECT layer, count(*) AS n FROM neurons JOIN runs USING (run_id) "
             "WHERE method = 'mfv' GROUP BY layer ORDER BY layer")
    page.get_by_role("button", name="Run query").click()
    page.get_by_text("6 rows").wait_for(timeout=30_000)
    assert "q=SELECT" in page.url                      # the query is shareable by link
    page.screenshot(path=str(tmp_path / "sql.png"))

    # a write is refused with a message, not a traceback
    box.fill("DROP TABLE neurons")
    page.get_by_role("button", name="Run query").click()
    page.get_by_text("only SELECT queries are allowed").wait_for(timeout=30_000)
    assert page.get_by_text("Traceback").count() == 0


def test_public_mode_locks_reruns_until_the_admin_token(public_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{public_server}/rerun?layer=fc8&unit=3&method=noise&steps=8", wait_until="networkidle")
    page.get_by_text("Public atlas · read-only").wait_for(timeout=30_000)
    page.get_by_text("Reruns are open to its administrators").wait_for(timeout=30_000)
    assert page.get_by_role("button", name="Run").count() == 0
    token = page.get_by_label("Admin token")
    token.fill("guess")
    token.press("Enter")
    page.get_by_text("That token is not valid.").wait_for(timeout=30_000)
    token.fill("let-me-in")
    token.press("Enter")
    page.get_by_role("button", name="Run").wait_for(timeout=30_000)
    page.get_by_role("button", name="Run").click()
    page.get_by_text("saved as run").wait_for(timeout=120_000)


def test_a_shared_link_reproduces_a_neuron_page(public_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{public_server}/neuron?layer=fc8&unit=3&facet=2", wait_until="networkidle")
    page.get_by_role("heading", name="Dress · fc8/3").wait_for(timeout=30_000)
    page.get_by_text("▶ facet 2").wait_for(timeout=30_000)          # the highlighted facet came with the link
    page.get_by_text("Public atlas · read-only").wait_for(timeout=30_000)


@pytest.fixture(scope="module")
def effnet_server(effnet_store):
    proc, url = start(env={"ATLAS_STORE": str(effnet_store)})
    yield url
    stop(proc)


def test_conv_pages_show_what_a_unit_sees_with_the_full_canvas_one_click_away(server, effnet_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/neuron?layer=conv2&unit=5", wait_until="networkidle")
    page.get_by_text("A unit of conv2 sees 8 x 8 pixels: shown is that receptive field").wait_for(timeout=30_000)
    page.get_by_role("radio", name="full image").click()
    page.get_by_text("outlined in orange").wait_for(timeout=30_000)
    assert "canvas=full" in page.url
    page.goto(f"{server}/neuron?layer=fc6&unit=5", wait_until="networkidle")     # fc units: unchanged
    page.get_by_role("heading", name="fc6/5 · fc6/5").wait_for(timeout=30_000)
    page.get_by_text("init (mean image)").first.wait_for(timeout=30_000)          # the facets are drawn
    assert page.get_by_role("radio", name="full image").count() == 0
    page.goto(f"{server}/?layer=conv3", wait_until="networkidle")                # the atlas's cards too
    page.get_by_text("of 128 neurons in conv3 match").wait_for(timeout=30_000)
    page.get_by_role("radio", name="receptive field").wait_for(timeout=30_000)

    page.goto(f"{effnet_server}/neuron?layer=_blocks.4.add&unit=1", wait_until="networkidle")
    page.get_by_text("A unit of _blocks.4.add sees 67 x 67 pixels").wait_for(timeout=60_000)
    assert page.get_by_text("Traceback").count() == 0


def test_lookup_of_an_upload_and_bad_uploads_get_one_message(server, browser, tmp_path):
    from PIL import Image
    from precompute.demo.data import load_fashion_mnist
    image = load_fashion_mnist(train=True).pixels([0])[0, 0]
    good = tmp_path / "boot.png"
    Image.fromarray((image.numpy() * 255).round().astype("uint8")).save(good)
    (tmp_path / "notes.png").write_text("not a picture")
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:50])
    (tmp_path / "huge.png").write_bytes(good.read_bytes() + b"\0" * (2 << 20))

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/lookup", wait_until="networkidle")
    chooser = page.locator("input[type=file]")
    chooser.wait_for(state="attached", timeout=30_000)
    chooser.set_input_files(str(good))
    page.get_by_role("heading", name="Predicted: Ankle boot").wait_for(timeout=120_000)
    page.get_by_role("tab", name="conv3").click()
    page.get_by_text("of its exemplars at or below").first.wait_for(timeout=30_000)
    page.get_by_role("link", name="Ankle boot").first.wait_for(timeout=30_000)    # the class neuron, linked

    for bad, message in (("notes.png", "is not an image"), ("cut.png", "could not be decoded"),
                         ("huge.png", "1.0MB or smaller")):
        chooser.set_input_files(str(tmp_path / bad))
        page.get_by_text(message).first.wait_for(timeout=60_000)
        assert page.get_by_text("Traceback").count() == 0
    chooser.set_input_files(str(good))                                         # and the app still works
    page.get_by_role("heading", name="Predicted: Ankle boot").wait_for(timeout=60_000)
