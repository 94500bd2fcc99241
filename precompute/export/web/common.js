// Pieces every page uses: DOM building, the site's JSON, routes (state lives in the URL's hash, so every
// view is a link), pictures and number formats.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

const cache = new Map();

/** A JSON file of the site, fetched once per page load. */
export function fetchJSON(path) {
  if (!cache.has(path)) {
    cache.set(path, fetch(path).then((response) => {
      if (!response.ok) throw new NotFound(path, response.status);
      return response.json();
    }));
    cache.get(path).catch(() => cache.delete(path));   // a failed fetch may be retried
  }
  return cache.get(path);
}

export class NotFound extends Error {
  constructor(path, status) {
    super(`cannot load ${path} (HTTP ${status})`);
    this.status = status;
  }
}

export const loadSite = () => fetchJSON("data/atlas.json");

/** The page named by the hash (#/neuron?layer=fc8&unit=3) and its parameters. */
export function parseRoute(hash) {
  const text = hash.replace(/^#\/?/, "");
  const at = text.indexOf("?");
  const name = (at < 0 ? text : text.slice(0, at)) || "atlas";
  return { name, params: new URLSearchParams(at < 0 ? "" : text.slice(at + 1)) };
}

export function href(name, values = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, value);
  }
  const query = params.toString();
  return `#/${name}${query ? "?" + query : ""}`;
}

/** Record a view's state in the URL without re-rendering the page (the back button still works per page). */
export function keepState(name, values) {
  const target = href(name, values);
  if (location.hash !== target) history.replaceState(null, "", target);
}

/** The MFV run a page shows: ?run=, else the store's first. */
export function chooseRun(site, params) {
  return site.runs.find((run) => run.run === params.get("run")) || site.runs[0];
}

/** ?run= only where the store has several runs, so links stay short. */
export const runParam = (site, run) => (site.runs.length > 1 ? run.run : null);

export function neuronHref(site, run, layer, unit, facet = null) {
  return href("neuron", { layer, unit, run: runParam(site, run), facet });
}

/** A picture file of the site, drawn crisp (pixelated) at `size` px; loaded only when near the viewport. */
export function picture(path, size, alt = "", className = "") {
  if (!path) return el("span", { class: "no-image", style: `width:${size}px;height:${size}px`, text: "no image" });
  return el("img", { src: path, alt, width: size, height: size, loading: "lazy", decoding: "async", class: className });
}

/** A picture with a receptive field's box drawn over it (`box`: top, left, bottom, right in input pixels). */
export function outlined(path, size, box, input, alt = "") {
  const frame = el("span", { class: "outlined", style: `width:${size}px;height:${size}px` }, picture(path, size, alt));
  if (box) {
    const [top, left, bottom, right] = box.map((v) => (100 * v) / input);
    frame.append(el("span", { class: "box", style: `top:${top}%;left:${left}%;height:${bottom - top}%;width:${right - left}%` }));
  }
  return frame;
}

export function fmt(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return typeof value === "number" && !Number.isInteger(value) ? value.toFixed(digits) : String(value);
}

export const pct = (value) => (value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`);
export const signedPct = (value) => `${value >= 0 ? "+" : ""}${Math.round(value * 100)}%`;

/** {columns, rows} (the compact tables of the site's JSON) as objects. */
export function records({ columns, rows }) {
  return rows.map((row) => Object.fromEntries(columns.map((column, i) => [column, row[i]])));
}

export function message(kind, ...text) {
  return el("div", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, ...text);
}

export function table(columns, rows, className = "") {
  return el("div", { class: "scroll" }, el("table", { class: className },
    el("thead", {}, el("tr", {}, columns.map((column) => el("th", { text: column })))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell) => el("td", {}, cell ?? "–")))))));
}
