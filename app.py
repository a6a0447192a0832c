"""brainseg web app: upload four MRI scans, segment the brain tumour, inspect and download the result.

Run with ``streamlit run app.py``. This file puts the page together from ``brainseg_app`` (one module per
section: sidebar, inputs, run, results with its viewer and reference scoring), which lays out widgets and
calls brainseg; the numbers and pictures come from the library. Results live in ``st.session_state`` so
moving a slider never re-runs the network.
"""
from __future__ import annotations

import streamlit as st

from brainseg_app.common import attempt
from brainseg_app.inputs import inputs_section
from brainseg_app.results import results_section
from brainseg_app.run import run_section
from brainseg_app.sidebar import model_card, sidebar

NOTICE = (
    "**Research use only.** brainseg is not a medical device; its segmentations must not be used for "
    "diagnosis or treatment decisions."
)


def main() -> None:
    st.set_page_config(page_title="brainseg: brain tumour segmentation", page_icon="🧠", layout="wide")
    st.title("brainseg · brain tumour segmentation")
    st.caption("A 3D U-Net segments glioma sub-regions (necrotic core, edema, enhancing tumour) in four-modality MRI.")
    st.warning(NOTICE)
    settings, card = sidebar()
    inputs = None
    with attempt("Reading the scans"):
        inputs = inputs_section()
    run_section(inputs, settings)
    results_section(inputs, settings)
    model_card(card, settings)


main()
