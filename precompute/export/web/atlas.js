// Atlas: a layer's neurons as cards with their facet images; search, filter by facet diversity, sort, page.
// The layer's index files list its neurons in the default order (facet diversity, high first), so the
// default view fetches only the index file its page falls in; a search, filter or other sort fetches the
// layer's whole index. Neuron documents are never fetched here, and card pictures load lazily.
import { chooseRun, el, fetchJSON, fmt, keepState, message, neuronHref, pct, runParam } from "./common.js";

const PAGE = 24;
const SORTS = {   // the dashboard's sort labels (so ?sort= links read the same), as key and direction
  "facet diversity, high first": ["facet_diversity", -1],
  "facet diversity, low first": ["facet_diversity", 1],
  "unit": ["unit", 1],
  "best activation reached": ["best_act_final", -1],
  "explanation score, high first": ["explanation", -1],
  "explanation score, low first": ["explanation", 1],
  "facet score, high first": ["facet_score", -1],
  "facet score, low first": ["facet_score", 1],
  "label": ["label", 1],
};
const DEFAULT_SORT = Object.keys(SORTS)[0];

function stateOf(params, run) {
  const names = run.layers.map((layer) => layer.layer);
  const number = (key, fallback) => (Number.isFinite(parseFloat(params.get(key))) ? parseFloat(params.get(key)) : fallback);
  const [dmin, dmax] = [number("dmin", 0), number("dmax", 1)].map((v) => Math.min(1, Math.max(0, v))).sort((a, b) => a - b);
  return {
    layer: names.includes(params.get("layer")) ? params.get("layer") : names[names.length - 1],
    q: params.get("q") || "",
    sort: SORTS[params.get("sort")] ? params.get("sort") : DEFAULT_SORT,
    dmin, dmax,
    all: params.get("all") !== "0",
    page: Math.max(1, parseInt(params.get("page"), 10) || 1),
  };
}

const isDefault = (s) => !s.q && s.sort === DEFAULT_SORT && s.dmin === 0 && s.dmax === 1 && s.all;

export async function render(page, params, site, isCurrent) {
  const run = chooseRun(site, params);
  const state = stateOf(params, run);
  page.append(el("h1", { text: "Atlas" }), el("p", { class: "caption", text:
    "Each card is one neuron: its facets (one synthesized image per cluster of the images that drive it), largest " +
    "facet first; conv layers' facets as the receptive field a unit sees. Open a card for the full picture." }));
  const results = el("section", { class: "results" });
  page.append(controls(run, state, () => update(results, site, run, state, isCurrent)), results);
  await update(results, site, run, state, isCurrent);
}

function controls(run, state, changed) {
  const set = (key, value) => { state[key] = value; state.page = 1; changed(); };
  let typing;
  return el("form", { class: "controls", onsubmit: (event) => event.preventDefault() },
    el("label", {}, "Layer ", el("select", { onchange: (e) => set("layer", e.target.value) },
      run.layers.map((l) => el("option", { value: l.layer, selected: l.layer === state.layer, text: l.layer })))),
    el("label", {}, "Search ", el("input", { type: "search", value: state.q, placeholder: "label, class or unit number",
      oninput: (e) => { clearTimeout(typing); typing = setTimeout(() => set("q", e.target.value.trim()), 250); } })),
    el("label", {}, "Sort by ", el("select", { onchange: (e) => set("sort", e.target.value) },
      Object.keys(SORTS).map((s) => el("option", { value: s, selected: s === state.sort, text: s })))),
    el("label", { title: "Share of the spread of a neuron's exemplars (fc7 codes) that lies between its facets" },
      "Facet diversity from ", range(state.dmin, (v) => set("dmin", v)), " to ", range(state.dmax, (v) => set("dmax", v))),
    el("label", {}, el("input", { type: "checkbox", checked: state.all, onchange: (e) => set("all", e.target.checked) }),
      " include neurons without a diversity score"));
}

const range = (value, onchange) => el("input", { type: "number", min: 0, max: 1, step: 0.05, value, class: "narrow",
  onchange: (e) => onchange(Math.min(1, Math.max(0, parseFloat(e.target.value) || 0))) });

async function update(results, site, run, state, isCurrent) {
  const [lo, hi] = [state.dmin, state.dmax].sort((a, b) => a - b);
  const layer = run.layers.find((l) => l.layer === state.layer);
  const { cards, total } = await matching(site, layer, state, lo, hi);
  if (!isCurrent()) return;
  keepState("atlas", { run: runParam(site, run), layer: state.layer, q: state.q, sort: state.sort === DEFAULT_SORT ? null : state.sort,
    dmin: lo === 0 ? null : lo, dmax: hi === 1 ? null : hi, all: state.all ? null : "0", page: state.page === 1 ? null : state.page });
  const pages = Math.max(1, Math.ceil(total / PAGE));
  const pager = el("div", { class: "pager" },
    el("span", {}, el("strong", { text: String(total) }), ` of ${layer.n_units} neurons in ${layer.layer} match`),
    el("button", { type: "button", disabled: state.page <= 1, onclick: () => { state.page -= 1; update(results, site, run, state, isCurrent); } }, "‹ previous"),
    el("span", { text: ` page ${state.page} of ${pages} ` }),
    el("button", { type: "button", disabled: state.page >= pages, onclick: () => { state.page += 1; update(results, site, run, state, isCurrent); } }, "next ›"));
  results.replaceChildren(pager, cards.length
    ? el("div", { class: "cards" }, cards.map((card) => cardOf(site, run, layer, card)))
    : message("info", "No neurons match. Widen the diversity range or clear the search."));
}

/** The cards of the page asked for, and how many neurons match. */
async function matching(site, layer, state, lo, hi) {
  const columns = site.index_columns;
  if (isDefault(state)) {   // the index files are in this order: fetch only those the page falls in
    state.page = Math.min(state.page, Math.max(1, Math.ceil(layer.neurons / PAGE)));
    const start = (state.page - 1) * PAGE;
    const first = Math.floor(start / site.page_size);
    const last = Math.floor((start + PAGE - 1) / site.page_size);
    const files = layer.index.slice(first, last + 1);
    const rows = (await Promise.all(files.map((path) => fetchJSON(path)))).flat();
    const offset = start - first * site.page_size;
    return { cards: rows.slice(offset, offset + PAGE).map((row) => named(columns, row)), total: layer.neurons };
  }
  const all = (await Promise.all(layer.index.map((path) => fetchJSON(path)))).flat().map((row) => named(columns, row));
  const q = state.q.toLowerCase();
  const found = all.filter((n) => (!q || n.label.toLowerCase().includes(q) || String(n.unit) === state.q ||
      (n.top_class || "").toLowerCase().includes(q)) &&
    (n.facet_diversity === null ? state.all : n.facet_diversity >= lo && n.facet_diversity <= hi));
  const [key, direction] = SORTS[state.sort];
  found.sort((a, b) => compare(a[key], b[key], direction) || a.unit - b.unit);
  state.page = Math.min(state.page, Math.max(1, Math.ceil(found.length / PAGE)));
  return { cards: found.slice((state.page - 1) * PAGE, state.page * PAGE), total: found.length };
}

const named = (columns, row) => Object.fromEntries(columns.map((column, i) => [column, row[i]]));

function compare(a, b, direction) {   // missing values last, whichever the direction (NULLS LAST)
  if (a === b) return 0;
  if (a === null) return 1;
  if (b === null) return -1;
  return (a < b ? -1 : 1) * direction;
}

function cardOf(site, run, layer, n) {
  const facts = n.status === "ok"
    ? [`diversity ${fmt(n.facet_diversity)} (null ${fmt(n.diversity_null)})`, `k=${n.k}`, `best act ${fmt(n.best_act_final, 1)}`,
       n.explanation !== null && `explains ${pct(n.explanation)}`, n.facet_score !== null && `facet score ${pct(n.facet_score)}`,
       n.top_class && `mostly ${n.top_class} (${pct(n.top_class_share)})`].filter(Boolean).join(" · ")
    : `${n.status}: ${n.reason}`;
  return el("article", { class: "card" },
    el("a", { href: neuronHref(site, run, layer.layer, n.unit) }, el("strong", { text: n.label }), ` · unit ${n.unit}`),
    n.status === "ok" && n.card ? el("a", { href: neuronHref(site, run, layer.layer, n.unit), tabindex: -1 },
      el("img", { src: n.card, alt: `facets of ${n.label}`, loading: "lazy", decoding: "async", class: "tile" })) : null,
    el("p", { class: "caption", text: facts }));
}
