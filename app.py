"""SimLens dashboard entry point: ``streamlit run app.py``."""

import streamlit as st

st.set_page_config(page_title="SimLens", layout="wide")
st.title("SimLens")
st.write("Token-pair explanations of sentence-similarity models. The audit pages arrive with the store.")
