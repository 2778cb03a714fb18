"""Faithfulness: the evidence that the explanations mean what they say. One tab per evaluation of the registry
(precompute/evaluations/, written by ``python -m precompute <verb>``) that the store holds, each drawn from the
figures its evaluation declares; a kind no evaluation declares shows its rows."""

import streamlit as st

from core import views
from core.dashboard import data, evidence, shell, widgets
from core.safe_text import literal
from core.views import evidence as ev
from precompute import evaluations

shell.ensure_navigation()
st.title("Faithfulness evidence")
st.caption("Do the token-pair explanations say what the model does? Conservation and convergence (exactness), "
           "perturbation (do the top tokens matter most?), a task with known ground truth, and the distribution "
           "of attributions — the evaluations of Möller et al. (2023) and Vasileiou & Eberle (2024).")

path = data.current_store_path()
store_arg = "" if str(path) == views.DEFAULT_STORE else f" --store {path}"
state = data.state()
listing = data.evaluation_list() if state.state in ("ok", "empty") else None
if state.state == "invalid":
    st.warning(f"The store at {literal(path)} cannot be read: {literal(state.message)}")
if listing is None or listing.empty:
    where = "no store yet" if state.state == "missing" else "the store holds no evaluations yet"
    st.info(f"**No faithfulness evaluations** in `{path}` ({where}). Each of these writes one (MiniLM on the first "
            f"pairs of STS-b test by default; `--model`, `--dataset`, `--methods`, `--layers` choose):")
    commands = [(f"{verb} {evaluations.get_evaluation(verb).example}".strip() + store_arg,
                 evaluations.get_evaluation(verb).help_text()) for verb in evaluations.verbs()]
    width = max(len(c) for c, _ in commands)
    st.markdown("```bash\n" + "\n".join(f".venv/bin/python -m precompute {c:<{width}}   # {note}"
                                         for c, note in commands) + "\n```")
    st.caption(f"`python -m precompute evaluations{store_arg}` lists what a store holds. This page reads the store "
               f"named by `{views.STORE_ENV}` (default `./{views.DEFAULT_STORE}`).")
    st.stop()

if st.button("Reload", key="faith_reload", help="re-read the evaluations (the store's newest snapshot)"):
    data.forget_snapshots()
kinds = ev.ordered_kinds(listing, evaluations.kinds())
tabs = st.tabs([getattr(evaluations.by_kind(k), "title", k) for k in kinds])
for kind, tab in zip(kinds, tabs, strict=True):
    with tab:
        spec = evaluations.by_kind(kind)
        found = listing[listing["kind"] == kind].reset_index(drop=True)
        labels = ev.evaluation_labels(found)
        key = f"faith_{kind}"
        if spec is not None and spec.newest_only:
            chosen = found["eval_id"].iloc[0]
        else:
            widgets.keep_valid(f"{key}_pick", list(labels))
            chosen = st.selectbox("Evaluation", list(labels), format_func=labels.get, key=f"{key}_pick")
        rows = data.evaluation_rows(chosen)
        if rows.empty:
            st.info("This evaluation has no rows (it may have been replaced); press Reload.")
            continue
        with st.expander("Settings"):
            st.json(ev.evaluation_settings(rows))
        if spec is not None and spec.caption:
            st.caption(spec.caption)
        try:
            evidence.show_evidence(rows, spec.figures if spec is not None else (), key)
        except Exception as exc:  # noqa: BLE001  (one malformed evaluation must not break the page)
            st.error(f"Cannot show this evaluation: {literal(f'{type(exc).__name__}: {exc}')}")
