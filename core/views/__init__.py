"""What the dashboard pages show, computed from store query results: pure presenters (pandas in, pandas or
str out; no Streamlit, no SQL, no torch), importable and unit-tested without a Streamlit runtime.

- :mod:`core.views.location`: the store's location and state, the "what to run" help, the cache fingerprint;
- :mod:`core.views.runs`: run labels and tables, metric formatting, dataset filters and slider bands;
- :mod:`core.views.cells`: POS heat-map cells;
- :mod:`core.views.pairs`: Example-page links, matrices, pair selectors, comparisons and failure tables;
- :mod:`core.views.evidence`: the Faithfulness page's tables (evaluation rows, their settings and extras).

The names are re-exported here, so pages write ``views.order_runs(...)``. The Streamlit side (cached data
access, widgets, navigation) is :mod:`core.dashboard`; charts are :mod:`core.charts`.
"""

from core.views.cells import (
    CELL_SEP,
    cell_examples_table,
    cell_label,
    cell_options,
    cell_row,
    heatmap_table,
    own_maximum,
    own_maximum_text,
    parse_cell,
    pos_label,
    pos_value,
    selected_cell,
)
from core.views.location import (
    AUTO_DEMO_ENV,
    DEFAULT_STORE,
    STORE_ENV,
    StoreHelp,
    StoreState,
    progress_text,
    should_autobuild,
    store_fingerprint,
    store_help,
    store_location,
    store_state,
)
from core.views.pairs import (
    comparison_caption,
    comparison_level,
    default_comparison,
    drop_prompt,
    drop_special,
    example_url,
    explanation_frame,
    failures_table,
    metric_deltas,
    pair_option_labels,
    pair_options,
    quartile_runs,
    run_difference,
    signed_failures,
    top_token_pairs,
    unmatched_text,
    with_links,
)
from core.views.runs import (
    ALL,
    OPEN_END,
    RUN_STATUSES,
    band_arg,
    coverage_suffix,
    dataset_table,
    default_run,
    display_status,
    empty_reason,
    filter_datasets,
    filter_options,
    filter_runs,
    find_text,
    fmt_metric,
    fmt_signed,
    gold_band_text,
    has_relevances,
    integration_notes,
    is_na,
    is_partial,
    languages,
    metrics_pivot,
    order_runs,
    partial_metrics_text,
    partial_note,
    run_label,
    run_labels,
    runs_overview,
    setting_text,
    short_model,
    status_counts,
    token_runs,
)

__all__ = [
    "ALL", "AUTO_DEMO_ENV", "CELL_SEP", "DEFAULT_STORE", "OPEN_END", "STORE_ENV", "StoreState", "band_arg",
    "cell_label", "cell_options", "cell_row", "comparison_level", "dataset_table", "default_run", "default_comparison",
    "display_status", "drop_prompt", "drop_special", "example_url", "explanation_frame", "failures_table", "filter_datasets",
    "filter_options", "filter_runs", "fmt_metric", "fmt_signed", "gold_band_text", "heatmap_table",
    "has_relevances", "StoreHelp", "store_help", "integration_notes", "is_na", "languages", "metric_deltas", "metrics_pivot", "order_runs", "pair_option_labels",
    "pair_options", "parse_cell", "pos_label", "pos_value", "quartile_runs", "run_difference", "run_label",
    "run_labels", "runs_overview", "selected_cell", "setting_text", "short_model",
    "should_autobuild", "signed_failures", "RUN_STATUSES", "status_counts", "store_fingerprint", "store_location", "store_state",
    "token_runs", "top_token_pairs", "with_links", "own_maximum", "coverage_suffix", "empty_reason", "find_text",
    "comparison_caption", "unmatched_text", "progress_text", "is_partial", "partial_metrics_text", "partial_note", "cell_examples_table", "own_maximum_text",
]
