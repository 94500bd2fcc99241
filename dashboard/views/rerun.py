"""Rerun: synthesize one neuron again with other settings; saved to the store as a new run."""
import streamlit as st

from dashboard import data, sql, ui
from dashboard.access import reruns_unlocked
from dashboard.reruns import RerunJob, RerunQueue
from precompute.core.methods import METHODS as ALL_METHODS
from precompute.core.methods import PARAMETERIZATIONS

METHODS = {name: described for name, (_, described) in ALL_METHODS.items()}


@st.cache_resource
def queue() -> RerunQueue:
    return RerunQueue(on_done=lambda job: sql.close_all())


st.title("Rerun")
st.caption("Run one neuron again with another method, k, step count or seed. Reruns run one at a time in "
           "the background (a second request waits in the queue); the rest of the app stays usable. "
           "The result is saved to the store as a new run.")
ui.require_store()
if not reruns_unlocked():
    st.stop()
run = ui.choose_run(st.sidebar)
layers = data.layers(ui.db(), run["run_id"])
names = layers["layer"].tolist()
config = ui.config_of(run)

with st.form("rerun"):
    cols = st.columns(3)
    layer_default = ui.param("layer", names[-1])
    layer = cols[0].selectbox("Layer", names, index=names.index(layer_default) if layer_default in names else len(names) - 1)
    n_units = int(layers.set_index("layer").loc[layer, "n_units"])
    unit = cols[1].number_input(f"Unit (0..{n_units - 1})", 0, n_units - 1, min(max(ui.param("unit", 0, int), 0), n_units - 1))
    methods = list(METHODS)
    method = cols[2].selectbox("Method", methods, format_func=METHODS.get,
                               index=methods.index(ui.param("method", "mfv")) if ui.param("method") in methods else 0)
    cols = st.columns(5)
    k = cols[0].number_input("k (facets)", 1, 50, ui.param("k", int(config.get("k", 10)), int))
    steps = cols[1].number_input("Steps", 4, 2000, ui.param("steps", int(config.get("steps", 200)), int))
    seed = cols[2].number_input("Seed", 0, 2**31 - 1, ui.param("seed", 0, int))
    device = cols[3].selectbox("Device", ["auto", "cpu", "cuda"], help="auto: the GPU when there is one")
    choices = ("auto", *PARAMETERIZATIONS)
    stored = config.get("param") if config.get("param") in choices else "pixel"   # older runs: the pixel loop
    chosen = ui.param("param", stored)
    param = cols[4].selectbox("Parameterization", choices, index=choices.index(chosen) if chosen in choices else 0,
                              help="auto: the build's default for the method and image size (MFV on small images: "
                                   "the paper's pixel loop, stopped at the strongest exemplar; else fourier); "
                                   "pixel: the paper's loop; fourier: Lucid's; maco: phase only. "
                                   "The run's transforms are kept.")
    submitted = st.form_submit_button("Run", type="primary")

if submitted:
    job = RerunJob(store=str(ui.store_dir()), layer=layer, unit=int(unit), method=method, k=int(k), steps=int(steps),
                   seed=int(seed), device=device, like=config | {"param": param})
    ui.set_params(job=queue().submit(job), layer=layer, unit=int(unit), method=method, k=int(k),
                  steps=int(steps), seed=int(seed), param=param)


@st.fragment(run_every=1.0)
def job_status(job_id: str) -> None:
    job = queue().get(job_id)
    if job is None:
        st.info("That rerun is not known to this server (it may have restarted). Start a new one above.")
        return
    title = (f"{METHODS[job.method]} · {job.layer}/{job.unit} · k={job.k} · {job.steps} steps · seed {job.seed}"
             f" · {(job.like or {}).get('param', 'pixel')}")
    if job.status == "queued":
        st.info(f"Queued: {title}. {queue().ahead_of(job_id)} rerun(s) ahead of it.")
    elif job.status == "running":
        share = job.done / job.total if job.total else 0.0
        st.progress(share, text=f"Running {title}: {job.task or 'starting'} {share:.0%}")
    elif job.status == "failed":
        st.error(f"Rerun failed: {job.error}")
    else:
        st.success(f"Done in {job.finished - job.submitted:.0f} s: saved as run `{job.run_id}`.")
        show_result(job)


def show_result(job) -> None:
    ui.open_store()   # the rerun rebuilt the database after this page's run began
    old = data.facets(ui.db(), run["run_id"], job.layer, job.unit)
    new = data.facets(ui.db(), job.run_id, job.layer, job.unit)
    left, right = st.columns(2)
    for col, title, frame in ((left, f"Stored MFV run `{run['run_id']}`", old), (right, f"This rerun `{job.run_id}`", new)):
        with col:
            st.markdown(f"**{title}**")
            if frame.empty:
                st.caption("no facets")
                continue
            for row_start in range(0, len(frame), 5):
                for c, facet in zip(st.columns(5), frame.iloc[row_start:row_start + 5].itertuples()):
                    with c:
                        ui.show_image(facet.image_png, f"act {facet.act_final:.1f}", 84)
    ui.neuron_link(job.layer, job.unit, run["run_id"], label="Open this neuron (all runs side by side)")


job_id = ui.param("job")
if job_id:
    job_status(job_id)
