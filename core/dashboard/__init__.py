"""The dashboard's Streamlit layer (imports Streamlit): :mod:`core.dashboard.data` (typed, cached store
access), :mod:`core.dashboard.widgets` (charts and tables with downloads, selectors, links) and
:mod:`core.dashboard.shell` (navigation, sidebar, the store check and first-launch demo). The pure
presenters are :mod:`core.views`."""
