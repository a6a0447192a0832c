"""The Streamlit app's parts, one per section of the page; app.py puts them together. UI code only: the
numbers and pictures come from brainseg."""
