"""Explain your own pair: live token-pair attributions of two texts with any model, method, layer and steps,
the prompt and (for Router/Asym models) the route of each side (query vs passage), the embedding's truncation
(Matryoshka truncate_dim), the weights' dtype and, for plain Hugging Face models, the pooling; custom model code
runs only when the user ticks "Trust remote code". One browser user must
not be able to exhaust the server: texts, steps and memory are capped here, and the page says so.

The only page that loads a model (and torch); models are cached per server process, results per input.
"""

import time
from pathlib import Path

import streamlit as st

from core import METHODS, charts, views  # torch: only this page imports the attribution code
from core.dashboard import data, shell, widgets
from core.memory import format_memory, parse_memory
from core.model_files import local_prompts
from core.models import DTYPES, POOLINGS
from core.quadrature import AUTO, DEFAULT_TOL
from core.routes import local_route_names
from core.safe_text import has_visible_character, literal

shell.ensure_navigation()
st.title("Explain your own pair")
st.caption("Type two texts, pick a model and a method, and get the token x token relevance matrix of their "
           "similarity, computed live. Results are cached: changing only the view options is instant.")

PACKAGED = ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]
OTHER = "Other (folder path or hub id)…"
OWN_POOLING = "the model's own"
DEFAULT_PROMPT, NO_PROMPT, CUSTOM_PROMPT = "default prompt", "no prompt", "custom text…"
PLAIN_ROUTE = "plain encode's route"
QUERY_DOCUMENT = ("query", "document")  # the tasks of encode_query and encode_document
MAX_TOKENS = 128  # per text, its prompt and special tokens included
MAX_STEPS = 128  # a fixed count, or the cap of auto
TOLERANCES = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4]
MAX_CHARS = 20_000  # what a text box takes at all (the text is then cut to MAX_TOKENS)
MEMORY_CHOICES = ["256MiB", "512MiB", "1GiB"]  # 1 GiB: one explanation stays under about 2 GB in all


@st.cache_resource(show_spinner=False, max_entries=3)
def load_model(name_or_path: str, pooling: str | None = None, trust_remote_code: bool = False,
               truncate_dim: int | None = None, dtype: str = DTYPES[0]):
    """The model, loaded once per server process (``pooling``: a plain Hugging Face model's;
    ``trust_remote_code``: run the folder's custom code; ``truncate_dim`` and ``dtype``: ``core.load_model``'s)."""
    from core import load_model as _load

    return _load(name_or_path, pooling=pooling, trust_remote_code=trust_remote_code, truncate_dim=truncate_dim,
                 dtype=dtype)


@st.cache_data(show_spinner=False, max_entries=128)
def explain_cached(model_key: str, text_a: str, text_b: str, method: str, layer: int | None, steps: int | str | None,
                   pooling: str | None = None, prompt_a: str | None = None, prompt_b: str | None = None,
                   max_memory: str = MEMORY_CHOICES[-1], route_a: str | None = None, route_b: str | None = None,
                   trust_remote_code: bool = False, truncate_dim: int | None = None, dtype: str = DTYPES[0],
                   tol: float | None = None):
    """core.explain of the texts cut to MAX_TOKENS tokens (with their prompts), at most MAX_STEPS steps (``auto``:
    to ``tol`` within MAX_STEPS), within ``max_memory``, each side through its route; cached per input."""
    from core import explain
    from core.attribution import cut_to_tokens

    if isinstance(steps, int) and steps > MAX_STEPS:
        raise ValueError(f"this page takes at most {MAX_STEPS} steps, got {steps}")
    auto = {"tol": tol, "max_steps": MAX_STEPS} if steps == AUTO and METHODS[method].uses_steps else {}
    if parse_memory(max_memory) > parse_memory(MEMORY_CHOICES[-1]):
        raise ValueError(f"this page takes at most {MEMORY_CHOICES[-1]} of memory, got {max_memory}")
    model = load_model(model_key, pooling, trust_remote_code, truncate_dim, dtype)
    text_a = cut_to_tokens(model.routed(route_a), text_a, MAX_TOKENS,
                           prompt_a if prompt_a is not None else model.side_prompts[0])
    text_b = cut_to_tokens(model.routed(route_b), text_b, MAX_TOKENS,
                           prompt_b if prompt_b is not None else model.side_prompts[1])
    return explain(model, text_a, text_b, method=method, layer=layer, steps=steps, prompt_a=prompt_a,
                   prompt_b=prompt_b, max_memory=max_memory, route_a=route_a, route_b=route_b, **auto)


def prompt_choice(label: str, key: str, names: list[str]) -> str | None:
    """A side's prompt: None (the model's default), "" (none), one of the model's prompt names, or a text."""
    choice = st.selectbox(label, [DEFAULT_PROMPT, *names, NO_PROMPT, CUSTOM_PROMPT], key=key,
                          help="prepended to the text as sentence-transformers does; the model's default prompt "
                               "unless you choose another")
    if choice == CUSTOM_PROMPT:
        return st.text_input(f"{label} text", key=f"{key}_text", placeholder="Represent this sentence: ")
    return {DEFAULT_PROMPT: None, NO_PROMPT: ""}.get(choice, choice)


def route_choice(label: str, key: str, names: list[str]) -> str | None:
    """A side's route through a Router/Asym model: None (plain ``encode``'s), a task or a route name."""
    choice = st.selectbox(label, [PLAIN_ROUTE, *QUERY_DOCUMENT, *(n for n in names if n not in QUERY_DOCUMENT)],
                          key=key, help="the task sentence-transformers routes the text by: query and document as "
                                        "encode_query and encode_document do, or a route of the model")
    return None if choice == PLAIN_ROUTE else choice


@st.cache_data(show_spinner=False, ttl=60)
def stored_model_paths() -> list[str]:
    """Local model folders recorded in the store (if there is one)."""
    try:
        models = data.models() if data.store_ok() else None
    except Exception:  # noqa: BLE001  (the store is optional on this page)
        return []
    if models is None or models.empty:
        return []
    return sorted({str(p) for p in models["path"].dropna() if Path(str(p)).is_dir()} - set(PACKAGED))


with st.container(border=True):
    c1, c2, c3, c4 = st.columns([1.6, 1.2, 1, 1])
    with c1:
        choices = [*PACKAGED, *stored_model_paths(), OTHER]
        choice = st.selectbox("Model", choices, key="xp_model_choice")
        model_key = choice
        if choice == OTHER:
            model_key = st.text_input("Model folder or hub id", key="xp_model_path",
                                      placeholder="/path/to/sentence-transformers-folder").strip()
    with c2:
        methods = sorted(METHODS)
        method = st.selectbox("Method", methods, index=methods.index("bilrp") if "bilrp" in methods else 0,
                              key="xp_method", help="\n\n".join(f"**{m}**: {METHODS[m].summary}" for m in methods))
    with c3:
        default_layer = st.checkbox("Method's default layer", value=True, key="xp_default_layer",
                                    help="the layer each method attributes to by default: "
                                         + "; ".join(f"{m}: {METHODS[m].default_layer_text}" for m in methods))
        layer = None if default_layer else int(st.number_input("Layer", 0, 48, 0, key="xp_layer"))
    with c4:
        impl = METHODS[method]
        steps, tol = None, None
        if impl.uses_steps:
            mode = st.radio("Steps", [AUTO, "fixed"], horizontal=True, key="xp_steps_mode",
                            index=0 if impl.default_steps == AUTO else 1,
                            help=f"auto: each text's integral refined until the completeness error meets the "
                                 f"tolerance, at most {MAX_STEPS} steps here; fixed: a number of steps")
            if mode == AUTO:
                steps = AUTO
                tol = float(st.select_slider("Tolerance", TOLERANCES, value=DEFAULT_TOL, key="xp_tol",
                                             format_func=lambda v: f"{v:g}",
                                             help="the largest |explained score − Σ matrix| asked for"))
            else:
                steps = int(st.number_input("Steps", 1, MAX_STEPS, 64, key="xp_steps",
                                            help=f"integration steps (at most {MAX_STEPS} here): more is more "
                                                 "exact and slower"))
        else:
            st.caption(f"{method} has no integration steps.")
    p1, p4, p5, p2, p3 = st.columns([1, 0.8, 0.8, 1.2, 1.2])
    with p1:
        pooling_label = st.selectbox("Pooling", [OWN_POOLING, *POOLINGS], key="xp_pooling",
                                     help="for plain Hugging Face models (e.g. BERT + CLS vs BERT + mean); a "
                                          "sentence-transformers model keeps its own modules")
        pooling = None if pooling_label == OWN_POOLING else pooling_label
    with p4:
        truncate_dim = int(st.number_input(
            "Truncate to dims", 0, 1_000_000, 0, key="xp_truncate_dim",
            help="0: the model's own (its truncate_dim, if it has one, else every dimension); K: the embedding "
                 "cut to its first K dimensions (Matryoshka), as sentence-transformers' truncate_dim: score, "
                 "explained score and factors are those of the cut embedding")) or None
    with p5:
        dtype = st.selectbox("Weights", DTYPES, key="xp_dtype",
                             help="float32: half-precision weights are upcast, so explanations conserve; native: the "
                                  "checkpoint's own dtype, as sentence-transformers runs it (the rounding shows in "
                                  "the residual)")
    prompt_names = list(local_prompts(model_key)) if model_key else []
    with p2:
        prompt_a = prompt_choice("Prompt of text 1", "xp_prompt_a", prompt_names)
    with p3:
        prompt_b = prompt_choice("Prompt of text 2", "xp_prompt_b", prompt_names)
    route_names = local_route_names(model_key) if model_key else []
    r1, r2, r3 = st.columns([1, 1.2, 1.2])
    with r1:
        trust_remote_code = st.checkbox("Trust remote code", value=False, key="xp_trust_remote_code",
                                        help="run the Python code a model folder names in its config's auto_map "
                                             "(as sentence-transformers' trust_remote_code=True); refused "
                                             "otherwise. Only for code you trust: it runs on this server")
    route_a = route_b = None
    if route_names:
        with r2:
            route_a = route_choice("Route of text 1", "xp_route_a", route_names)
        with r3:
            route_b = route_choice("Route of text 2", "xp_route_b", route_names)
    t1, t2 = st.columns(2)
    with t1:
        text_a = st.text_area("Text 1", "A man is playing a guitar.", key="xp_text_a", height=90,
                              max_chars=MAX_CHARS)
    with t2:
        text_b = st.text_area("Text 2", "A person plays an instrument.", key="xp_text_b", height=90,
                              max_chars=MAX_CHARS)
    m1, m2 = st.columns([1, 3], vertical_alignment="bottom")
    with m1:
        memory = st.select_slider("Memory per explanation", MEMORY_CHOICES, value=MEMORY_CHOICES[-1],
                                  key="xp_memory", help="working memory beyond the model (max_memory); results do "
                                                        "not depend on it, long texts run faster with more")
    with m2:
        st.caption(f"On this page each text is cut to its first {MAX_TOKENS} tokens (its prompt and special tokens "
                   f"included), ij takes at most {MAX_STEPS} steps, and one explanation at most "
                   f"{format_memory(parse_memory(memory))} of working memory. The Python API and "
                   "`python -m precompute attribute` take any length the model accepts (`max_memory`, "
                   "`--max-memory`).")
    go = st.button("Explain", type="primary", key="xp_go")

args = (model_key, text_a, text_b, method, layer, steps, pooling, prompt_a, prompt_b, memory, route_a, route_b,
        trust_remote_code, truncate_dim, dtype, tol)
if go:
    if not model_key:
        st.error("Type a model folder path or hub id.")
        st.stop()
    if not has_visible_character(text_a) or not has_visible_character(text_b):
        st.error("Both texts need some words.")
        st.stop()
    with st.status(f"Explaining with {literal(views.short_model(model_key))} · {method}…", expanded=True) as status:
        bar = st.progress(0.0, text="loading the model…")
        t0 = time.perf_counter()
        try:
            load_model(model_key, pooling, trust_remote_code, truncate_dim, dtype)
            bar.progress(0.35, text=f"computing {method} attributions…")
            explain_cached(*args)
        except Exception as exc:  # noqa: BLE001  (bad model path, layer or text: say so, never a trace)
            status.update(label="Could not explain this pair", state="error", expanded=True)
            st.error(literal(f"{type(exc).__name__}: {exc}"))
            st.stop()
        bar.progress(1.0, text="done")
        status.update(label=f"Explained in {time.perf_counter() - t0:.1f} s", state="complete", expanded=False)
    st.session_state["xp_result"] = args

if st.session_state.get("xp_result") is None:
    st.info("Press **Explain** to compute the matrix.")
    st.stop()

shown = st.session_state["xp_result"]
if shown != args:
    st.caption("Showing the last explained input; press Explain to update it.")
try:
    exp = explain_cached(*shown)
except Exception as exc:  # noqa: BLE001
    st.error(literal(f"{type(exc).__name__}: {exc}"))
    st.stop()

with st.container(horizontal=True):
    st.metric("model score", f"{exp.model_score:.4f}", border=True, help="the model's own similarity")
    st.metric("explained score", f"{exp.score:.4f}", border=True, help="the quantity the matrix decomposes")
    st.metric("Σ matrix", f"{float(exp.matrix.sum()):.4f}", border=True)
    st.metric("residual", f"{exp.residual:+.4f}", border=True, help="explained score − Σ matrix")
    st.metric("layer", str(exp.layer), border=True)
    explained = load_model(shown[0], shown[6], shown[12], shown[13], shown[14])
    st.metric("dims", str(explained.dim), border=True,
              help="the embedding's dimensions, after truncate_dim" + (" (cut)" if explained.truncate_dim else ""))
    st.metric("weights", str(next(explained.encoder.parameters()).dtype).removeprefix("torch."), border=True,
              help="the dtype the explanation ran in")
    for side, text in (("1", exp.prompt_text_a), ("2", exp.prompt_text_b)):
        if text:
            st.metric(f"prompt of text {side}", repr(text), border=True)
    for side, route in (("1", exp.route_a), ("2", exp.route_b)):
        if route is not None:
            st.metric(f"route of text {side}", route, border=True, help="the Router route the text went through")
    if exp.steps_used is not None:
        st.metric("steps", f"{exp.steps_a} · {exp.steps_b}", border=True,
                  help="integration steps of text 1 and text 2" + (
                      f" (auto: to tolerance {exp.tol:g}, at most {exp.max_steps})" if exp.tol is not None else ""))
note, capped = views.integration_notes({"tol": exp.tol, "max_steps": exp.max_steps},
                                       {"steps_a": exp.steps_a, "steps_b": exp.steps_b, "capped": exp.capped,
                                        "residual": exp.residual})
if note:
    st.caption(note)
if capped:
    st.warning(capped)
if exp.truncated:
    st.warning("A text was longer than the model's maximum and was truncated.")
cut = [side for side, given, used in (("1", shown[1], exp.text_a), ("2", shown[2], exp.text_b)) if given != used]
if cut:
    st.warning(f"Text {' and '.join(cut)} cut to its first {MAX_TOKENS} tokens on this page "
               f"({len(exp.tokens_a)} and {len(exp.tokens_b)} tokens explained).")

level, special, show_values = widgets.matrix_options("xp")
prompt_tokens = widgets.prompt_toggle("xp", any(exp.prompt_a) or any(exp.prompt_b))
view = exp.to_words() if level == "word" else exp
long = views.explanation_frame(view)
if not special:
    long = views.drop_special(long)
if not prompt_tokens:
    long = views.drop_prompt(long)
name = f"simlens_explain_{method}"
left, right = st.columns([3, 2], gap="large")
with left:
    chart = charts.token_heatmap_chart(long, title=f"{views.short_model(shown[0])} · {exp.method} L{exp.layer}",
                                       show_values=show_values)
    widgets.show_chart(chart, name, "xp_chart")
with right:
    st.subheader("Strongest pairs")
    widgets.show_table(views.top_token_pairs(long, k=12), f"{name}_top", "xp_top",
                       column_config={"relevance": st.column_config.NumberColumn(format="%+.5f"),
                                    "share": st.column_config.NumberColumn("share of Σ|R|", format="percent")})
    with st.expander("Whole matrix (long form)"):
        widgets.show_table(long, f"{name}_matrix", "xp_matrix", height=300)
