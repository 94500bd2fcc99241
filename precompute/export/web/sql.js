// SQL: one read-only query over the store's tables, run by DuckDB-WASM in the visitor's browser: nothing is
// sent anywhere. The tables are the store's, by the same names (data/sql/*.arrow), loaded when a query first
// names them. A row cap and a time limit keep the tab responsive: a query past the limit is stopped by
// terminating DuckDB's worker, and the next query starts a fresh one.
import { chooseRun, el, fetchJSON, keepState, message, neuronHref } from "./common.js";

const VENDOR = new URL("vendor/duckdb/", location.href);
// What may start a query (the dashboard's rule, dashboard/sql.py: one SELECT-type statement, or EXPLAIN of one).
const QUERY_WORDS = new Set(["SELECT", "WITH", "FROM", "VALUES", "TABLE", "DESCRIBE", "SHOW", "SUMMARIZE", "PIVOT", "UNPIVOT", "("]);
const KEYWORD = 4, OPERATOR = 3, COMMENT = 5;   // DuckDB's tokenizer's token types
let engine = null;                              // the running DuckDB, a promise of {db, worker, Type, created, tables}
let objectURLs = [];                            // the last result's pictures and CSV, released on the next run

export async function render(page, params, site) {
  const index = await fetchJSON("data/sql/tables.json");
  const names = Object.keys(index.tables);
  const box = el("textarea", { id: "sql-text", rows: 9, spellcheck: "false" });
  box.value = params.get("q") || Object.values(index.examples)[0];
  const examples = el("select", { id: "sql-example", onchange: () => { if (examples.value) box.value = index.examples[examples.value]; } },
    el("option", { value: "", text: "(write your own)" }), Object.keys(index.examples).map((name) => el("option", { value: name, text: name })));
  const status = el("p", { class: "status", role: "status" });
  const output = el("section", { class: "result" });
  const run = async () => {
    keepState("sql", { q: box.value });
    output.replaceChildren();
    objectURLs.forEach((url) => URL.revokeObjectURL(url));
    objectURLs = [];
    try {
      const result = await query(box.value, index, (text) => { status.textContent = text; });
      status.textContent = "";
      output.replaceChildren(...showResult(result, index.row_cap, site, chooseRun(site, params)));
    } catch (err) {
      status.textContent = "";
      output.replaceChildren(message("error", err.message));
    }
  };
  page.append(el("h1", { text: "SQL" }),
    el("p", { class: "caption", text: `One read-only SELECT over the tables ${names.join(", ")}, run by DuckDB-WASM in your ` +
      `browser (nothing is sent to a server). Queries stop after ${index.time_limit_s} s and return at most ` +
      `${index.row_cap.toLocaleString("en")} rows; a query first loads the tables it names. The schema is in docs/store.md.` }),
    el("label", {}, "Examples ", examples), el("label", { class: "block" }, "Query", box),
    el("button", { type: "button", class: "primary", onclick: run }, "Run query"), status, output);
  if (params.get("q")) await run();
}

/** Check, load what it names, run under the limits; {columns, rows, truncated, ms}. */
async function query(sql, index, say) {
  if (!engine) {
    say("Starting DuckDB…");
    engine = start();
    engine.catch(() => { engine = null; });        // a failed start is tried again by the next query
  }
  const current = engine;
  const mine = await current;
  await checkSql(mine.db, sql);
  if (!mine.created) mine.created = createTables(mine.db, index);
  await mine.created;
  const wanted = Object.keys(index.tables).filter((name) => new RegExp(`\\b${name}\\b`, "i").test(sql));
  for (const name of wanted) {
    if (!mine.tables.has(name)) {
      mine.tables.set(name, loadTable(mine.db, name, index.tables[name], say));
      mine.tables.get(name).catch(() => mine.tables.delete(name));
    }
    await mine.tables.get(name);
  }
  say("Running…");
  const started = performance.now();
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => {
      // A query runs inside the worker's WebAssembly and cannot be interrupted there: end the worker.
      mine.worker.terminate();
      if (engine === current) engine = null;
      reject(new Error(`query stopped after the ${index.time_limit_s} s time limit; DuckDB restarts for the next ` +
        "query (filter more, aggregate, or add a LIMIT)"));
    }, index.time_limit_s * 1000);
  });
  try {
    const result = await Promise.race([fetchRows(mine, sql, index.row_cap), limit]);
    return { ...result, ms: performance.now() - started };
  } catch (err) {
    throw new Error(firstLine(err.message));
  } finally {
    clearTimeout(timer);
  }
}

async function start() {
  const duckdb = await import("./vendor/duckdb/duckdb.js");
  const worker = new Worker(new URL("duckdb-browser-eh.worker.js", VENDOR));
  const db = new duckdb.AsyncDuckDB(new duckdb.VoidLogger(), worker);
  await db.instantiate(new URL("duckdb-eh.wasm", VENDOR).href);
  await db.open({ query: { castBigIntToDouble: true, castDecimalToDouble: true } });
  const conn = await db.connect();
  // An exported site works offline, so no query may fetch an extension (or anything else) from the network.
  for (const setting of ["autoinstall_known_extensions = false", "autoload_known_extensions = false",
    "enable_external_access = false", "lock_configuration = true"]) await conn.query(`SET ${setting}`);
  await conn.close();
  return { db, worker, Type: duckdb.Type, created: null, tables: new Map() };
}

/** Every table, empty, from its schema alone (a few hundred bytes each), so that SHOW TABLES and DESCRIBE see them all. */
async function createTables(db, index) {
  const conn = await db.connect();
  try {
    const schemas = await Promise.all(Object.values(index.tables).map((table) => arrowFile(table.schema)));
    for (const [i, name] of Object.keys(index.tables).entries()) await conn.insertArrowFromIPCStream(schemas[i], { name, create: true });
  } finally {
    await conn.close();
  }
}

/** A table's rows, the first time a query names it. */
async function loadTable(db, name, table, say) {
  const conn = await db.connect();
  try {
    for (const [i, path] of table.pieces.entries()) {
      say(`Loading table ${name} (${i + 1} of ${table.pieces.length}, ${(table.bytes / 2 ** 20).toFixed(1)} MiB in all)…`);
      await conn.insertArrowFromIPCStream(await arrowFile(path), { name, create: false });
    }
  } finally {
    await conn.close();
  }
}

async function arrowFile(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`cannot load ${path} (HTTP ${response.status})`);
  return new Uint8Array(await response.arrayBuffer());
}

/** Refuse anything but one query, as the dashboard does (a visitor's own tab, but the same rule and messages). */
async function checkSql(db, sql) {
  const { offsets, types } = await db.tokenize(sql);
  const statements = [[]];
  offsets.forEach((start, i) => {
    if (types[i] === COMMENT) return;
    const text = sql.slice(start, offsets[i + 1] ?? sql.length).trim().split(/\s|--|\/\*/)[0].toUpperCase();
    if (types[i] === OPERATOR && text.includes(";")) statements.push([]);
    else statements[statements.length - 1].push({ text, type: types[i] });
  });
  const found = statements.filter((tokens) => tokens.length);
  if (!found.length) throw new Error("empty query: write a SELECT statement");
  if (found.length > 1) throw new Error(`one statement at a time, please (found ${found.length})`);
  const [kind, word] = statementKind(found[0]);
  if (!QUERY_WORDS.has(word)) throw new Error(`only SELECT queries are allowed, got ${kind}`);
}

/** What a statement does, and the word that says it: its first, or for EXPLAIN [ANALYZE] [(options)] the
 * first of the statement it explains (EXPLAIN ANALYZE runs it). */
function statementKind(tokens) {
  const first = tokens[0].text.startsWith("(") ? "(" : tokens[0].text;
  if (first !== "EXPLAIN") return [first, first];
  let depth = 0;
  for (const { text, type } of tokens.slice(1)) {
    if (type === OPERATOR) depth += text.split("(").length - text.split(")").length;
    else if (depth === 0 && text !== "ANALYZE" && text !== "ANALYSE") return [`EXPLAIN of ${text}`, text];
  }
  return ["EXPLAIN of nothing", ""];
}

/** The first row_cap rows (and whether there were more), read from the result as it streams. */
async function fetchRows({ db, Type }, sql, cap) {
  const conn = await db.connect();
  try {
    const reader = await conn.send(sql, true);
    const batches = [];
    let count = 0;
    for await (const batch of reader) {
      batches.push(batch);
      count += batch.numRows;
      if (count > cap) break;
    }
    if (count > cap) await conn.cancelSent().catch(() => {});
    const fields = (batches[0] || reader).schema.fields;
    const rows = [];
    for (const batch of batches) {
      const columns = fields.map((_, c) => batch.getChildAt(c));
      for (let r = 0; r < batch.numRows && rows.length < cap; r += 1) rows.push(columns.map((column) => column.get(r)));
    }
    const kinds = { [Type.Timestamp]: "timestamp", [Type.Date]: "date" };
    return { columns: fields.map((f) => ({ name: f.name, kind: kinds[f.type.typeId] || "" })), rows, truncated: count > cap };
  } finally {
    await conn.close();
  }
}

const firstLine = (text) => String(text).split("\n")[0].replace(/^Error: /, "");

function showResult({ columns, rows, truncated, ms }, cap, site, run) {
  const layerAt = columns.findIndex((c) => c.name === "layer"), unitAt = columns.findIndex((c) => c.name === "unit");
  const links = layerAt >= 0 && unitAt >= 0;
  const head = el("tr", {}, links ? el("th", { text: "open" }) : null, columns.map((c) => el("th", { text: c.name })));
  const body = rows.map((row) => el("tr", {},
    links ? el("td", {}, el("a", { href: neuronHref(site, run, row[layerAt], Number(row[unitAt])), text: "open neuron" })) : null,
    row.map((value, i) => el("td", {}, cell(value, columns[i].kind)))));
  const summary = el("p", {}, el("strong", { text: `${rows.length.toLocaleString("en")} rows` }),
    truncated ? ` — truncated at ${cap.toLocaleString("en")}; add a LIMIT or filter` : "", ` (${Math.round(ms)} ms)`);
  if (!rows.length) return [summary, message("info", "The query returned no rows.")];
  return [summary, el("div", { class: "scroll" }, el("table", { class: "rows" }, el("thead", {}, head), el("tbody", {}, body))),
    csvLink(columns, rows)];
}

const PNG = [0x89, 0x50, 0x4e, 0x47];

function cell(value, kind) {
  if (value === null || value === undefined) return el("span", { class: "null", text: "NULL" });
  if (value instanceof Uint8Array) {
    if (PNG.every((byte, i) => value[i] === byte)) {
      return el("img", { src: objectURL(new Blob([value], { type: "image/png" })), class: "cell-image", alt: "PNG" });
    }
    return `<${value.length} bytes>`;
  }
  return text(value, kind);
}

function objectURL(blob) {
  objectURLs.push(URL.createObjectURL(blob));
  return objectURLs[objectURLs.length - 1];
}

/** A value as text: numbers in full (as DuckDB prints them), times in ISO form, lists and structs as JSON. */
function text(value, kind) {
  if (kind === "timestamp") return new Date(value).toISOString().replace(".000Z", "Z");
  if (kind === "date") return new Date(value).toISOString().slice(0, 10);
  if (typeof value === "object") return JSON.stringify(value.toJSON ? value.toJSON() : value, (_, v) => (typeof v === "bigint" ? String(v) : v));
  return String(value);
}

function csvLink(columns, rows) {
  const quote = (v) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const lines = [columns.map((c) => quote(c.name)).join(","), ...rows.map((row) => row.map((v, i) =>
    v === null || v === undefined ? "" : quote(v instanceof Uint8Array ? hex(v) : text(v, columns[i].kind))).join(","))];
  return el("a", { href: objectURL(new Blob([lines.join("\n")], { type: "text/csv" })), download: "query.csv", class: "download" }, "Download CSV");
}
