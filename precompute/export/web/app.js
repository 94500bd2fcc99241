// The router: the hash names the page (#/atlas, #/neuron, #/layers, #/sql) and holds its state, so any
// static host serves every view from this one index.html. A page's module loads only when it is opened.
import { el, loadSite, message, parseRoute } from "./common.js";

const VIEWS = {
  atlas: () => import("./atlas.js"),
  neuron: () => import("./neuron.js"),
  layers: () => import("./layers.js"),
  sql: () => import("./sql.js"),
};
let shown = 0;   // the number of the latest navigation: a slower, older one must not draw over it

async function show() {
  const { name, params } = parseRoute(location.hash);
  const number = ++shown;
  const isCurrent = () => number === shown;
  const main = document.getElementById("view");
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.route === name);
  try {
    const site = await loadSite();
    document.getElementById("store").textContent = `store ${site.store} · model ${site.runs[0].model}`;
    document.querySelector('nav a[data-route="sql"]').hidden = !site.sql;
    if (!VIEWS[name]) {
      main.replaceChildren(message("error", `There is no page “${name}” here. `, el("a", { href: "#/atlas", text: "Open the Atlas" })));
      return;
    }
    const view = await VIEWS[name]();
    if (!isCurrent()) return;
    const page = el("div", { class: `page page-${name}` });
    main.replaceChildren(page);
    await view.render(page, params, site, isCurrent);
    document.title = `${page.querySelector("h1")?.textContent || name} · Facet Atlas`;
  } catch (err) {
    if (isCurrent()) main.replaceChildren(message("error", `This page could not be shown: ${err.message}`));
  }
}

window.addEventListener("hashchange", show);
show();
