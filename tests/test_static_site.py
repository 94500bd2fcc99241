"""The static atlas: `export` of the committed demo store, served by a plain static file server, in a real
browser (headless Chromium). Every view renders; links open what they name; the Atlas fetches no neuron
document; the SQL page, run by DuckDB-WASM in the page, answers as the dashboard's SQL does; no console errors."""
import json
import os
import shutil
import subprocess
import urllib.parse
from functools import partial

import pytest

from conftest import CHROMIUM, ROOT

DEMO = ROOT / "data" / "demo"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
DIVERSE = """SELECT n.layer, n.unit, n.label, n.facet_diversity, n.diversity_null
FROM neurons n JOIN runs r USING (run_id)
WHERE r.method = 'mfv' AND n.facet_diversity >= 0.85
ORDER BY n.facet_diversity DESC, n.layer, n.unit"""


def install_duckdb_wasm() -> None:
    """The pinned DuckDB-WASM (the README's test command installs it; this does when it was skipped)."""
    from precompute.core.errors import AtlasError
    from precompute.export import vendor
    try:
        vendor.check_duckdb()
        return
    except AtlasError:
        pass
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"DuckDB-WASM is not installed and there is no npm to install it ({vendor.npm_ci()})")
    done = subprocess.run([npm, "ci", "--prefix", str(vendor.WEB)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"{vendor.npm_ci()} failed (no network?): {done.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    install_duckdb_wasm()
    from precompute.export.site import export_site
    return export_site(DEMO, tmp_path_factory.mktemp("static") / "site").site


@pytest.fixture(scope="module")
def url(site):
    """A plain static file server: what any web host does, nothing more."""
    from precompute.export.serving import serve
    server, address = serve(site)
    yield address
    server.shutdown()
    server.server_close()


@pytest.fixture
def page(browser):
    """A fresh page that records every request and fails the test on any console error or uncaught exception."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    problems, page.requested = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("request", lambda request: page.requested.append(request.url))
    yield page
    context.close()
    assert problems == []


def test_every_view_renders(url, page):
    page.goto(f"{url}#/atlas?layer=fc8")
    page.get_by_text("10 of 10 neurons in fc8 match").wait_for()
    assert page.locator("article.card img.tile").count() == 10
    page.goto(f"{url}#/neuron?layer=fc8&unit=3")
    page.get_by_role("heading", name="Dress · fc8/3").wait_for()
    page.get_by_role("heading", name="t-SNE map of the exemplars").wait_for()
    assert page.locator(".facet").count() == 10
    exemplars = dashboard_rows("SELECT count(*) FROM exemplars JOIN runs USING (run_id) "
                               "WHERE method = 'mfv' AND layer = 'fc8' AND unit = 3")[0][0][0]
    assert page.locator("svg.scatter circle").count() == exemplars > 1000   # a class neuron: its class's images
    page.locator(".facet img").first.wait_for()
    page.get_by_role("heading", name="Other methods and reruns").wait_for()
    page.goto(f"{url}#/layers")
    page.get_by_role("heading", name="Layers").wait_for()
    page.get_by_role("heading", name="The claims").wait_for()
    assert page.locator("svg.boxes").count() == 2 and page.locator(".claim").count() >= 4
    page.goto(f"{url}#/sql")
    page.get_by_role("heading", name="SQL").wait_for()
    page.get_by_role("button", name="Run query").click()
    page.get_by_text("rows", exact=False).first.wait_for()
    page.locator("table.rows tbody tr").first.wait_for(timeout=60_000)
    images = [u for u in page.requested if "/img/" in u]
    assert images and not any(u.startswith("data:") for u in page.requested)


def test_a_neuron_link_opens_that_neuron_and_links_keep_the_view(url, page):
    page.goto(f"{url}#/atlas?layer=fc8")
    page.get_by_role("link", name="Sneaker · unit 7").click()
    page.get_by_role("heading", name="Sneaker · fc8/7").wait_for()
    assert "#/neuron?" in page.url and "unit=7" in page.url and "layer=fc8" in page.url
    page.goto(f"{url}#/neuron?layer=fc8&unit=3&facet=2")
    page.get_by_text("▶ facet 2").wait_for()                          # the highlighted facet came with the link
    page.goto(f"{url}#/neuron?layer=conv2&unit=5")
    page.get_by_text("A unit of conv2 sees 8 x 8 pixels: shown is that receptive field").wait_for()
    page.get_by_role("radio", name="full image").click()
    page.get_by_text("outlined in orange").wait_for()
    assert "canvas=full" in page.url and page.locator(".outlined .box").count() > 10
    page.goto(f"{url}#/neuron?layer=fc8&unit=99")
    page.get_by_text("Unit 99 is out of range for layer fc8: valid units are 0..9.").wait_for()


def test_the_atlas_fetches_no_neuron_document_and_only_the_cards_it_shows(url, page):
    page.goto(f"{url}#/atlas?layer=fc6")
    page.get_by_text("256 of 256 neurons in fc6 match").wait_for()
    page.wait_for_load_state("networkidle")
    assert not [u for u in page.requested if "/n/" in u]               # no per-neuron document
    assert 0 < len([u for u in page.requested if "/img/" in u]) <= 24  # at most one picture per card shown
    page.get_by_label("Search").fill("fc6/1")                          # a search reads the layer's index only
    page.get_by_text("111 of 256 neurons in fc6 match").wait_for()     # fc6/1, fc6/10..19, fc6/100..199
    assert "q=fc6%2F1" in page.url
    page.wait_for_load_state("networkidle")
    assert not [u for u in page.requested if "/n/" in u]


def browser_rows(page, timeout=60_000) -> list[tuple]:
    """The result table's cells, as the page shows them (pictures as '<png>')."""
    page.locator("table.rows, .message.error").first.wait_for(timeout=timeout)
    if page.locator(".message.error").count():
        raise AssertionError(page.locator(".message.error").inner_text())
    return [tuple(parse(cell) for cell in row) for row in page.evaluate("""() =>
        [...document.querySelectorAll('table.rows tbody tr')].map((tr) => [...tr.querySelectorAll('td')].slice(
            document.querySelector('table.rows th').textContent === 'open' ? 1 : 0).map((td) =>
            td.querySelector('img') ? '<png>' : td.textContent))""")]


def parse(text: str):
    if text == "NULL":
        return None
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return plain(kind(text))
        except ValueError:
            pass
    return text


def plain(value):
    """A value as both sides can agree on it: whole floats as ints, PNG bytes as '<png>'."""
    if isinstance(value, (bytes, bytearray)):
        return "<png>" if bytes(value[:4]) == b"\x89PNG" else f"<{len(value)} bytes>"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value.item() if hasattr(value, "item") else value


def dashboard_rows(sql: str, max_rows=1000) -> tuple[list[tuple], bool]:
    from dashboard.sql import run_readonly
    from precompute.core.store import ensure_database
    frame = run_readonly(ensure_database(DEMO), sql, timeout_s=30, max_rows=max_rows)
    rows = [tuple(plain(None if v is None or (isinstance(v, float) and v != v) else v) for v in row)
            for row in frame.itertuples(index=False)]
    return rows, frame.attrs["truncated"]


def run_in_page(page, sql: str):
    page.get_by_label("Query").fill(sql)
    page.get_by_role("button", name="Run query").click()


def test_a_facet_diversity_filter_in_the_browser_returns_the_dashboards_rows(url, page):
    page.goto(f"{url}#/sql?q={urllib.parse.quote(DIVERSE)}")          # a query link runs as it opens
    expected, _ = dashboard_rows(DIVERSE)
    assert len(expected) > 10
    assert browser_rows(page) == expected                              # the same rows, in the same order
    page.get_by_role("link", name="open neuron").first.click()
    layer, unit = expected[0][:2]
    page.get_by_role("heading", name=f"{expected[0][2]} · {layer}/{unit}").wait_for()


def test_every_sql_example_runs_in_the_browser_with_the_dashboards_rows(url, page):
    from precompute.core.sql_examples import EXAMPLES
    page.goto(f"{url}#/sql")
    for name, sql in EXAMPLES.items():
        page.get_by_label("Examples").select_option(name)
        page.get_by_role("button", name="Run query").click()
        page.get_by_text("rows").first.wait_for()
        shown = browser_rows(page)
        expected, truncated = dashboard_rows(sql)
        key = partial(json.dumps, default=str)
        assert sorted(shown, key=key) == sorted(expected, key=key), name   # ties may come in another order
        assert page.get_by_text("truncated at 1,000").count() == int(truncated), name


def test_the_row_cap_the_statement_check_and_the_time_limit(url, page):
    page.goto(f"{url}#/sql")
    run_in_page(page, "SELECT * FROM range(5000) t(i)")
    page.get_by_text("1,000 rows — truncated at 1,000").wait_for(timeout=60_000)
    assert len(browser_rows(page)) == 1000
    run_in_page(page, "DROP TABLE neurons")
    page.get_by_text("only SELECT queries are allowed, got DROP").wait_for()
    run_in_page(page, "SELECT 1; SELECT 2")
    page.get_by_text("one statement at a time, please (found 2)").wait_for()
    run_in_page(page, "EXPLAIN ANALYZE DELETE FROM neurons")            # EXPLAIN ANALYZE would run it
    page.get_by_text("only SELECT queries are allowed, got EXPLAIN of DELETE").wait_for()
    run_in_page(page, "-- the plan\nEXPLAIN (FORMAT json) SELECT count(*) FROM runs;")
    assert browser_rows(page)[0][0] == "physical_plan"
    run_in_page(page, "SHOW TABLES")                                   # every table is there before its rows load
    assert sorted(browser_rows(page)) == sorted(dashboard_rows("SHOW TABLES")[0])
    run_in_page(page, "SELECT * FROM read_parquet('data/x.parquet')")   # no extension is fetched, ever
    page.get_by_text("exists in the parquet extension").wait_for()
    run_in_page(page, "SELECT count(*) FROM range(1000000000) a, range(1000) b WHERE a.range + b.range = 7")
    page.get_by_text("query stopped after the 10 s time limit").wait_for(timeout=30_000)
    run_in_page(page, "SELECT 6 * 7 AS answer, count(*) AS layers FROM layers")   # a fresh DuckDB answers
    page.locator("table.rows").wait_for(timeout=60_000)
    assert browser_rows(page) == [(42, 24)]


def fc8_store(folder):
    """A small real store: the demo store's fc8 parts (10 class neurons, four runs), without evaluations."""
    for part in (DEMO / "parts").glob("*/*.parquet"):
        if part.parent.name == "runs" or "__fc8" in part.stem:
            (folder / "parts" / part.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(part, folder / "parts" / part.parent.name / part.name)
    return folder


def test_export_refuses_what_it_must_not_replace_and_replaces_an_earlier_export(tmp_path, capsys, monkeypatch):
    from precompute.cli import main
    from precompute.export import vendor
    store = fc8_store(tmp_path / "store")
    monkeypatch.setitem(vendor.DUCKDB_FILES, "duckdb-eh.wasm", tmp_path / "not-installed.wasm")
    assert main(["export", "--store", str(store), "--out", str(tmp_path / "site")]) == 2
    assert capsys.readouterr().err.startswith("error: the SQL page needs DuckDB-WASM, which is not installed "
                                              "(duckdb-eh.wasm is missing): run npm ci --prefix ")
    monkeypatch.undo()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my own file")
    site = str(tmp_path / "site")
    for store_arg, out, said in ((tmp_path / "nowhere", site, "no atlas store at"),
                                 (tmp_path / "mine", site, "is not an atlas store"),
                                 (store, tmp_path / "mine", "is not an earlier export"),
                                 (store, store / "site", "is inside the store")):
        assert main(["export", "--store", str(store_arg), "--out", str(out)]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: ") and said in error[0], error
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my own file"
    assert not (store / "site").exists()
    for _ in range(2):                                                 # the second export replaces the first
        assert main(["export", "--store", str(store), "--out", site, "--no-sql"]) == 0
    out = capsys.readouterr().out
    assert "10 neuron pages" in out and "no SQL page" in out
    site = tmp_path / "site"
    assert json.loads((site / "facet-atlas-site.json").read_text())["neurons"] == 10
    catalog = json.loads((site / "data" / "atlas.json").read_text())
    assert [layer["layer"] for layer in catalog["runs"][0]["layers"]] == ["fc8"] and not catalog["sql"]
    assert not (site / "vendor").exists() and not list(tmp_path.glob(".site.*"))   # nothing half-written left
    layers_page = json.loads((site / catalog["runs"][0]["layers_page"]).read_text())
    assert layers_page["evidence"] is None                             # a store without evaluations
