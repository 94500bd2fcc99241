"""Command line: `python -m precompute {demo,build,layers,evaluate,lookup,export}`.

User mistakes (AtlasError) print one line and exit with code 2; bugs keep their traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .core.errors import AtlasError

DEMO_OUT = Path(__file__).resolve().parent.parent / "data" / "demo"
EPILOG = """examples:
  python -m precompute demo                       # train the demo CNN if needed, build data/demo/
  python -m precompute layers --model demo        # addressable layers, kind and unit counts
  python -m precompute build --model demo --layers fc8,fc7,conv3 --store data/my-atlas
  python -m precompute build --model demo --layers fc8 --units 0,3 --method mfv,noise --store /tmp/a
  python -m precompute build --model demo --store /shared/atlas --executor ray --ray-address auto   # on a Ray cluster
  python -m precompute evaluate --store data/demo  # measure the paper's claims into the evaluations table
  python -m precompute export --store data/demo --out site/   # a static site: any web host serves it

query the result with any DuckDB client:
  duckdb data/demo/atlas.duckdb "SELECT layer, unit, label, facet_diversity FROM neurons
                                 ORDER BY facet_diversity DESC LIMIT 10"
"""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    """Comma-separated names; 'none' (or nothing) is the empty list."""
    return tuple(part.strip() for part in text.split(",") if part.strip() and part.strip() != "none")


def _add_build_options(parser: argparse.ArgumentParser, demo: bool) -> None:
    from .pipeline.plan import BuildConfig
    defaults = BuildConfig(store="")
    _add_target_options(parser.add_argument_group("what to build"), demo)
    _add_algorithm_options(parser.add_argument_group("algorithm"), defaults)
    p = parser.add_argument_group("preprocessing (default: the model's own)")
    p.add_argument("--input-size", type=int, help="input size in px (e.g. 224)")
    p.add_argument("--mean", type=_float_list, help="per-channel mean of pixels in [0, 1], e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=_float_list, help="per-channel std, e.g. 0.229,0.224,0.225")
    _add_resource_options(parser.add_argument_group("resources and store"), defaults, demo)
    _add_ray_options(parser.add_argument_group("scaling out (Ray: pip install -r requirements-ray.txt)"), defaults)


def _add_target_options(g, demo: bool) -> None:
    from .core.methods import METHODS
    if not demo:
        g.add_argument("--model", default="demo", help="demo, efficientnet-lite0, torchvision:NAME (e.g. "
                       "torchvision:resnet18) or package.module:function (default: demo)")
        g.add_argument("--weights", help="weights file (state_dict or checkpoint); default: the demo's or "
                                         "efficientnet-lite0's shipped weights, random weights for others")
        g.add_argument("--store", "--out", dest="store", required=True, metavar="DIR",
                       help="store folder to create or resume (--out: the same)")
        g.add_argument("--layers", type=_name_list, help="comma-separated layer names or aliases fc8/fc7 "
                                                         "(default: every layer of the demo, fc8 of other models)")
        g.add_argument("--units", type=_int_list, help="comma-separated unit indices (default: all)")
    g.add_argument("--method", dest="methods", type=_name_list, default=None,
                   help=f"comma-separated: {', '.join(METHODS)} (diversity: Lucid's objective, k images "
                        f"per neuron pushed apart in style) (default: {'all four' if demo else 'mfv'})")
    g.add_argument("--data", help="demo: folder with the Fashion-MNIST idx files (default: "
                                  "/usr/share/datasets/fashion-mnist); other models: an image folder with one "
                                  "sub-folder per class (ImageNet train layout)")


def _add_algorithm_options(a, d) -> None:
    a.add_argument("--top-n", type=int, default=d.top_n, help=f"exemplars per hidden unit (default {d.top_n})")
    a.add_argument("-k", "--k", type=int, default=d.k, help=f"facets per neuron (default {d.k})")
    a.add_argument("-m", "--m", type=int, default=d.m, help=f"images averaged into each init (default {d.m})")
    a.add_argument("--min-facet-size", type=int, default=None, metavar="N",
                   help="smallest facet kept: smaller k-means clusters are dissolved into their nearest "
                        "neighbours (default: m, so every init averages m images)")
    a.add_argument("--steps", type=int, default=d.steps, help=f"synthesis steps per image (default {d.steps})")
    a.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    a.add_argument("--param", default=d.param, metavar="{pixel,fourier,maco,auto}",
                   help="image parameterization: pixel (the paper's), fourier (Lucid's decorrelated colour + FFT), "
                        "maco (phase only, natural magnitude) or auto (default): the sweeps' choice per method and size, "
                        "MFV below 64 px pixel, everything else fourier (docs/synthesis.md)")
    a.add_argument("--transforms", type=_name_list, default=None, metavar="LIST",
                   help="transformation robustness, comma-separated of jitter, scale, rotate, or none (default: none for "
                        "MFV below 64 px, stopped at the exemplar as it is; all three otherwise, as the sweep chose; "
                        "the paper's loop: --param pixel --transforms jitter --stop steps --facet-pull 0)")
    from .core.methods import FACET_PULL, SEED_PENALTY, STOPS
    a.add_argument("--stop", default=d.stop, choices=STOPS,
                   help="MFV: exemplar keeps each image once it drives its unit as much as the neuron's strongest "
                        "exemplar (past that, facets turn into one class stamp; benchmarks/sweep_facets.py); "
                        "steps runs every step; auto (default): exemplar for MFV below 64 px, steps otherwise")
    a.add_argument("--facet-pull", type=float, default=None, metavar="W",
                   help="MFV: every step also turns each image's code, in the model's embedding, towards its own "
                        "facet's direction (never against the unit), a step W times the unit's in size: it draws out "
                        "what tells the facet from the neuron's others (0: none; default %g, the sweeps' choice at "
                        "28 and 224 px)" % FACET_PULL)
    a.add_argument("--seed-penalty", type=float, default=None, metavar="W",
                   help="MFV: penalize each image's mean squared pixel change from its init by W (feature "
                        "accentuation's seed regularizer): it keeps the init's layout (0: none; default %g at 64 px and "
                        "more, where the sweep chose it, 0 below, where the stop at the exemplar does)" % SEED_PENALTY)
    a.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                   help="Adam's learning rate for fourier and maco (default: theirs)")
    a.add_argument("--scale-range", type=float, default=None, metavar="F",
                   help="the scale transform draws a scale of 1 +- F every step (default: 0.4 for inputs of 64 px "
                        "or more, 0.1 below, as the sweeps chose)")
    a.add_argument("--max-images", type=int, default=None,
                   help="use only the first N training images (quick trials; default: all)")


def _add_resource_options(r, d, demo: bool) -> None:
    r.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default auto)")
    r.add_argument("--workers", type=int, default=None,
                   help="processes for facet finding (t-SNE), one neuron each (default: one per CPU core)")
    r.add_argument("--precision", default="auto", help="fp32, bf16 (synthesis under bfloat16 autocast) or auto "
                                                        "(default): bf16 on GPUs and on CPUs with AMX, where it is faster")
    r.add_argument("--batch-size", type=int, default=None,
                   help="images per synthesis batch (default at 28 px: 128 on CPU, 320 on GPU; scaled down by input area)")
    r.add_argument("--chunk-units", type=int, default=d.chunk_units,
                   help=f"neurons per committed chunk (default {d.chunk_units})")
    r.add_argument("--thumbs-per-facet", type=int, default=d.thumbs_per_facet,
                   help=f"exemplar thumbnails stored per facet, nearest first; -1 for all (default {d.thumbs_per_facet})")
    r.add_argument("--no-pca-codes", dest="pca_codes", action="store_false", default=not demo,
                   help="do not store each exemplar's PCA-50 code" + (" (the demo never does)" if demo else ""))


def _add_ray_options(x, d) -> None:
    x.add_argument("--executor", default=d.executor, metavar="{local,ray}",
                   help="local (default): build in this process; ray: split the image scan and the neuron chunks "
                        "over the workers of a Ray cluster (one progress bar; rerun the command to resume)")
    x.add_argument("--ray-address", metavar="ADDRESS", help="the Ray cluster: auto (the one 'ray start' started on this machine), "
                                         "HOST:6379 (its head node), ray://HOST:10001 (Ray Client) or local (a new "
                                         "one here); default: $RAY_ADDRESS, else a cluster started here with 'ray "
                                         "start', else a new local one")
    x.add_argument("--gpus-per-task", type=float, metavar="N", help="GPUs per Ray worker, fractions share a GPU "
                                                       "(default: 1 if the cluster has GPUs, else 0)")
    x.add_argument("--cpus-per-task", type=int, metavar="N", help="CPU cores per Ray worker: its torch threads and t-SNE "
                                                     "processes (default 1)")
    x.add_argument("--ray-workers", type=int, metavar="N", help="Ray workers to start (default: as many as the cluster's free "
                                                   "CPUs and GPUs hold at the sizes above)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facet-atlas" if Path(sys.argv[0]).name == "facet-atlas" else "python -m precompute",
        description="Facet Atlas precompute: Multifaceted Feature Visualization (Nguyen, Yosinski & "
                    "Clune, 2016) for every neuron of a classifier, written to a Parquet + DuckDB store.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,build,layers,evaluate,lookup,export}")
    demo = sub.add_parser("demo", help="train the demo CNN if needed and build the full demo atlas",
                          description="Train the demo Fashion-MNIST CNN (if data/models has no weights) and "
                                      f"build the atlas of every neuron of every layer into {DEMO_OUT}.")
    demo.add_argument("--store", "--out", dest="store", default=str(DEMO_OUT), metavar="DIR",
                      help=f"store folder (default {DEMO_OUT})")
    demo.add_argument("--retrain", action="store_true", help="train the demo model even if weights exist")
    _add_build_options(demo, demo=True)
    build = sub.add_parser("build", help="build or resume an atlas store",
                           description="Build (or resume: run it again after a kill) an atlas store.")
    _add_build_options(build, demo=False)
    layers = sub.add_parser("layers", help="list a model's addressable layers",
                            description="List a model's conv and linear layers and its repeated blocks' outputs: "
                                        "their kind (conv, tokens, fc), units (channels) and how a unit is read.")
    layers.add_argument("--model", default="demo", help="demo, efficientnet-lite0, torchvision:NAME or "
                                                         "package.module:function (default: demo)")
    layers.add_argument("--weights", help="weights file (default: the model's shipped or random weights)")
    _add_evaluate_parser(sub)
    _add_lookup_parser(sub)
    _add_export_parser(sub)
    return parser


EVALUATE_EPILOG = """what it measures, per run (one per method) and neuron, then per layer and run:
  act_final, raised, top1           activation reached, share raised, share top-1 (class neurons)
  top1_model_b                      share top-1 under a second network (demo: another seed; ImageNet: Lite2)
  image_diversity                   spread of a neuron's k images' fc7 codes / spread of its exemplars'
  image_spread                      the same spread, raw (no exemplars needed)
  init_diversity                    MFV: image_diversity of the facets' init (mean) images
  facet_diversity, diversity_null   MFV's stored facet diversity and its random-split baseline
  hist_chi2, code_distance          naturalness: distance to the neuron's real exemplars
  facet_to_cluster                  MFV facet images nearest their own cluster's centroid (vs chance)
  centre_share, fragments           how centred / fragmented an image is
  moved                             mean absolute pixel change from the image's init (pixels in [0, 1])
  retention_px, retention_b         MFV: share of facet images nearest their own init among the neuron's
                                    inits, in pixels and in a second network's features (1/k: chance)
  spread_px, spread_b, gain         spread of facet images / of their inits; act_final / best exemplar
  clipped                           share of pixels at 0 or 1
  facet_score                       MFV: do facet images tell their facets' held-out images apart
                                    (0.5: chance; method exemplars: the yardstick; facet_scores table)
  explanation                       the explanation score of the neuron's images (scores table; needs
                                    held-out images: the demo's test split, else --heldout DIR)
and a verdict per claim of the paper (rows claim1..claim4).

examples:
  python -m precompute evaluate --store data/demo
  python -m precompute evaluate --store data/demo --effnet 8 --figures docs/figures --results docs/results.md
"""


def _add_evaluate_parser(sub) -> None:
    from .evidence.effnet import EFFNET_CLASSES, EFFNET_STEPS
    evaluate = sub.add_parser(
        "evaluate", help="measure how far a store reproduces the paper's claims (evaluations table)",
        description="Measure every run of a store (mfv, center-bias, noise, diversity) against the paper's claims "
                    "and write the numbers to its evaluations table (rerunning replaces them); optionally the "
                    "EfficientNet-Lite0 data-free subset, the claim figures and the results page (docs/results.md).",
        epilog=EVALUATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("--store", required=True, help="store folder to evaluate (e.g. data/demo)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    evaluate.add_argument("--effnet", type=int, default=0, metavar="N",
                          help="also build N EfficientNet-Lite0 class neurons with every method on folders of shipped "
                               f"photos ({EFFNET_STEPS} steps; classes {', '.join(EFFNET_CLASSES[:3])}, ...), judged by "
                               "EfficientNet-Lite2, and record their evaluation and scores in this store (default 0: "
                               "skip; about two minutes a neuron on 2 cores)")
    evaluate.add_argument("--effnet-store", default=None, metavar="DIR",
                          help="where the EfficientNet-Lite0 subset is built and resumed "
                               "(default ~/.cache/facet-atlas/effnet-evidence)")
    evaluate.add_argument("--heldout", default=None, metavar="DIR",
                          help="image folder (one sub-folder per class) the store was not built from: the trial images "
                               "of the explanation score (default: the demo's test split; other models are not scored)")
    evaluate.add_argument("--backbone", default=None, metavar="MODEL",
                          help="network whose features judge similarity in the explanation score (default: the second "
                               "demo CNN for the demo, efficientnet-lite2 otherwise)")
    evaluate.add_argument("--figures", default=None, metavar="DIR", help="write one PNG figure per claim into DIR")
    evaluate.add_argument("--results", "--readme", dest="results", default=None, metavar="FILE",
                          help="rewrite the block between <!-- results:start --> and <!-- results:end --> in FILE "
                               "(the results page: docs/results.md)")


LOOKUP_EPILOG = """examples:
  python -m precompute lookup --store data/demo shoe.png            # files
  python -m precompute lookup --store data/demo --id 0 --id 17 --json  # images of the store's dataset
  python -m precompute lookup --store data/demo --exemplars 200        # how well lookup finds exemplars' neurons
"""


def _add_lookup_parser(sub) -> None:
    lookup = sub.add_parser(
        "lookup", help="which neurons and facets does an image drive? (reverse lookup)",
        description="For each image: per layer of the store's MFV run, the units it drives most, ranked by its "
                    "activation as a percentile of each unit's exemplar activations; for each, the facet whose "
                    "mean fc7 code is nearest the image's; and the class neuron of the model's top-1 prediction.",
        epilog=LOOKUP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    lookup.add_argument("images", nargs="*", metavar="IMAGE", help="image files (PNG, JPEG, WebP, ...)")
    lookup.add_argument("--store", required=True, help="store folder with an MFV run (e.g. data/demo)")
    lookup.add_argument("--id", dest="ids", type=int, action="append", default=[], metavar="N",
                        help="an image of the store's dataset by its image_id (repeatable)")
    lookup.add_argument("--run", default=None, help="MFV run id (default: the store's largest MFV run)")
    lookup.add_argument("--top", type=int, default=10, help="units listed per layer (default 10)")
    lookup.add_argument("--json", action="store_true", help="print the full result as JSON")
    lookup.add_argument("--exemplars", type=int, default=0, metavar="N",
                        help="instead: look up N exemplar images sampled from the store and report how often the "
                             "exemplar's own neuron is among its layer's --top units and its stored facet the nearest")
    lookup.add_argument("--seed", type=int, default=0, help="sampling seed of --exemplars (default 0)")
    lookup.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")


EXPORT_EPILOG = """the site: index.html and its pages (#/atlas, #/neuron?layer=fc8&unit=3, #/layers, #/sql?q=...),
data/ (JSON, Arrow tables for SQL), img/ (every picture once, named by its content) and vendor/ (DuckDB-WASM).
Nothing runs on the server: any static file host serves it, and visitors' browsers run their SQL.

examples:
  npm ci --prefix precompute/export/web      # once: the pinned DuckDB-WASM for the SQL page
  python -m precompute export --store data/demo --out site/
  python -m http.server --directory site 8000   # look at it: http://localhost:8000/
  python -m precompute export --store data/my-atlas --out site/ --no-sql   # no SQL page, no npm needed

docs/publishing.md: GitHub Pages, S3, a folder on a web server.
"""


def _add_export_parser(sub) -> None:
    export = sub.add_parser(
        "export", help="write a store as a static site (SQL in the browser): any web host serves it",
        description="Write a self-contained static site of a store: the Atlas, Neuron, Layers and SQL pages, every "
                    "view a link, images as files, and the store's tables for SQL that runs in the visitor's browser "
                    "(DuckDB-WASM). An existing --out is replaced only if it is an earlier export.",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("--store", required=True, metavar="DIR", help="store folder to export (e.g. data/demo); only read")
    export.add_argument("--out", required=True, metavar="SITE", help="folder to write the site into: new, empty or an "
                                                                      "earlier export (which it replaces)")
    export.add_argument("--no-sql", dest="sql", action="store_false",
                        help="leave out the SQL page and its tables (a smaller site; needs no npm)")


def cmd_export(args, progress) -> str:
    from .export.site import export_site, summary_lines
    summary = export_site(args.store, args.out, sql=args.sql, progress=progress)
    progress.close()
    lines = summary_lines(summary)
    print(lines[0])
    return lines[1]


def _config(args, out: str, methods_default):
    from .pipeline.plan import BuildConfig
    return BuildConfig(
        store=out, model=getattr(args, "model", "demo"), weights=getattr(args, "weights", None), data=args.data,
        layers=getattr(args, "layers", None), units=getattr(args, "units", None),
        methods=args.methods or methods_default, top_n=args.top_n, k=args.k, m=args.m,
        min_facet_size=args.min_facet_size, steps=args.steps, param=args.param, transforms=args.transforms, stop=args.stop,
        facet_pull=args.facet_pull, seed_penalty=args.seed_penalty,
        learning_rate=args.learning_rate, scale_range=args.scale_range,
        seed=args.seed, batch_size=args.batch_size, chunk_units=args.chunk_units, device=args.device,
        thumbs_per_facet=args.thumbs_per_facet, pca_codes=args.pca_codes, max_images=args.max_images,
        input_size=args.input_size, mean=args.mean, std=args.std, precision=args.precision,
        workers=args.workers, executor=args.executor, ray_address=args.ray_address,
        gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task, ray_workers=args.ray_workers)


def _report(summary) -> None:
    print(f"store: {summary.store}  ({summary.neurons_built} neuron-runs built in {summary.seconds:.1f} s)")
    if summary.skipped_files:
        print(f"  skipped {summary.skipped_files} unreadable image file(s)")
    for method, run_id in summary.run_ids.items():
        print(f"  {method:12s} run {run_id}")
    if summary.timings:
        print("  time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary.timings.items()))


def _open_hint(out: str) -> str:
    """The one line a newcomer needs after a build: how to open the atlas."""
    store = "" if Path(out).resolve() == DEMO_OUT else f" -- --store {out}"
    return f"open the atlas: streamlit run dashboard/app.py{store}"


def cmd_demo(args, progress) -> str:
    from .demo.train import ensure_demo_weights
    ensure_demo_weights(retrain=args.retrain, data=args.data, progress=progress)
    from .pipeline.atlas import build_atlas
    from .core.methods import METHODS
    _report(build_atlas(_config(args, args.store, tuple(METHODS)), progress))
    return _open_hint(args.store)


def cmd_build(args, progress) -> str:
    from .pipeline.atlas import build_atlas
    if args.model == "demo" and not args.weights:
        from .demo.train import ensure_demo_weights
        ensure_demo_weights(data=args.data, progress=progress)
    _report(build_atlas(_config(args, args.store, ("mfv",)), progress))
    return _open_hint(args.store)


def cmd_layers(args, progress) -> None:
    from .pipeline.atlas import list_layers
    rows = list_layers(args.model, args.weights)
    width = max(12, *(len(row["layer"]) for row in rows))
    print(f"{'layer':{width}s} {'alias':5s} {'kind':6s} {'role':9s} {'units':>6s}  {'shape':10s} read as")
    for row in rows:
        print(f"{row['layer']:{width}s} {row['alias']:5s} {row['kind']:6s} {row['role']:9s} {row['n_units']:6d}  "
              f"{row['shape']:10s} {row['read']}".rstrip())
    print("any other graph node name (torchvision get_graph_node_names) can be passed to --layers too"
          + ("; LAYER:cls reads a token layer's class token" if any(row["kind"] == "tokens" for row in rows) else ""))


def cmd_evaluate(args, progress) -> None:
    from .evidence.evaluate import evaluate_store
    if args.effnet:
        from .evidence.effnet import evaluate_effnet
        evaluate_effnet(args.store, args.effnet, args.effnet_store, progress)
    summary = evaluate_store(args.store, progress, args.device, args.heldout, args.backbone)
    print(f"store: {summary.store}  ({summary.rows} evaluation rows in {summary.seconds:.1f} s)")
    for method, run_id in summary.run_ids.items():
        print(f"  {method:12s} run {run_id}")
    for skipped in summary.skipped:
        print(f"  not evaluated (another run of the method or model): {skipped}")
    for verdict in summary.verdicts:
        print(f"  {verdict.claim}: {verdict.word} - {verdict.evidence}")
    if args.figures or args.results:
        from .core.report import write_report
        for path in write_report(summary.store, args.figures, args.results):
            print(f"  wrote {path}")


def cmd_lookup(args, progress) -> None:
    from .lookup import Lookup, as_json, check_exemplars, describe, describe_check
    if args.top < 1:
        raise AtlasError(f"--top must be at least 1, got {args.top}")
    if not (args.images or args.ids or args.exemplars):
        raise AtlasError("give image files, --id N (an image of the store's dataset) or --exemplars N")
    lookup = Lookup(args.store, args.run, args.device)
    if args.exemplars:
        found = check_exemplars(lookup, args.exemplars, args.top, args.seed, progress=progress)
        progress.close()
        print(json.dumps(found, indent=2) if args.json else describe_check(found))
        return
    pixels = [lookup.pixels_of_file(path) for path in args.images] + [lookup.pixels_of_id(i) for i in args.ids]
    names = list(args.images) + [f"image {i}" for i in args.ids]
    import torch
    results = lookup(torch.stack(pixels), names, args.top)
    print(as_json(results) if args.json else "\n\n".join(describe(result, args.top) for result in results))


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from .progress import TerminalProgress
    progress = TerminalProgress()
    started = time.perf_counter()
    try:
        hint = {"demo": cmd_demo, "build": cmd_build, "layers": cmd_layers, "evaluate": cmd_evaluate,
                "lookup": cmd_lookup, "export": cmd_export}[args.command](args, progress)
    except AtlasError as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.close()
        print("interrupted: finished chunks are saved; run the same command again to resume", file=sys.stderr)
        return 130
    progress.close()
    if args.command not in ("layers", "lookup"):
        print(f"done in {time.perf_counter() - started:.1f} s")
    if hint:
        print(hint)
    return 0
