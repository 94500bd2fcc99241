"""SQL: read-only queries over the store's tables; image columns render as images."""
import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

from dashboard import ui
from dashboard.images import data_uri
from dashboard.sql import QueryRejected, run_readonly
from dashboard.sql_examples import EXAMPLES

MAX_ROWS = 5_000
TIMEOUT_S = 10.0
st.title("SQL")
st.caption(f"One read-only SELECT over the tables `runs`, `layers`, `neurons`, `facets`, `exemplars`, `thumbnails`. "
           f"Queries stop after {TIMEOUT_S:g} s and return at most {MAX_ROWS:,} rows. The schema is in docs/store.md.")
ui.require_store()

example = st.selectbox("Examples", ["(write your own)", *EXAMPLES], index=0)
initial = ui.param("q", "")
if example != "(write your own)":
    initial = EXAMPLES[example].strip()
if "sql_text" not in st.session_state or example != st.session_state.get("sql_example"):
    st.session_state["sql_text"] = initial or EXAMPLES["Most multifaceted neurons of each layer"].strip()
    st.session_state["sql_example"] = example
sql = st.text_area("Query", key="sql_text", height=180)
run_clicked = st.button("Run query", type="primary")
if not (run_clicked or ui.param("q")):
    st.stop()
ui.set_params(q=sql)


def show_table(df: pd.DataFrame) -> None:
    view, config = df.copy(), {}
    for name in df.columns:
        sample = next((v for v in df[name] if v is not None and not (isinstance(v, float) and pd.isna(v))), None)
        if isinstance(sample, (bytes, bytearray)):
            if bytes(sample[:8]) == b"\x89PNG\r\n\x1a\n":
                view[name] = [data_uri(bytes(v)) if v is not None else None for v in df[name]]
                config[name] = st.column_config.ImageColumn(name)
            else:
                view[name] = [f"<{len(v)} bytes>" if v is not None else None for v in df[name]]
    if {"layer", "unit"} <= set(df.columns):
        view.insert(0, "open", [f"neuron?layer={layer}&unit={unit}" for layer, unit in zip(df["layer"], df["unit"])])
        config["open"] = st.column_config.LinkColumn("open", display_text="open neuron")
    has_images = any(name != "open" for name in config)
    st.dataframe(view, column_config=config, hide_index=True, row_height=60 if has_images else None)


try:
    result = run_readonly(ui.db().path, sql, timeout_s=TIMEOUT_S, max_rows=MAX_ROWS)
except QueryRejected as exc:
    st.error(str(exc))
    st.stop()

truncated = result.attrs.get("truncated", False)
st.markdown(f"**{len(result):,} rows**" + (f" — truncated at {MAX_ROWS:,}; add a LIMIT or filter" if truncated else ""))
if result.empty:
    st.info("The query returned no rows.")
    st.stop()
show_table(result)
if {"layer", "unit"} <= set(result.columns):
    st.caption("Open a neuron:")
    links = st.columns(5)
    for i, (layer, unit) in enumerate(result[["layer", "unit"]].drop_duplicates().head(10).itertuples(index=False)):
        with links[i % 5]:
            ui.neuron_link(layer, int(unit))

downloads = st.columns(2)
plain = result.copy()
for name in plain.columns:
    if plain[name].map(lambda v: isinstance(v, (bytes, bytearray))).any():
        plain[name] = plain[name].map(lambda v: v.hex() if isinstance(v, (bytes, bytearray)) else v)
downloads[0].download_button("Download CSV", plain.to_csv(index=False).encode(), "query.csv", "text/csv")
buffer = io.BytesIO()
pq.write_table(pa.Table.from_pandas(result, preserve_index=False), buffer)
downloads[1].download_button("Download Parquet", buffer.getvalue(), "query.parquet", "application/octet-stream")
