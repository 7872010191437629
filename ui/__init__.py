"""Streamlit-side helpers shared by the pages: state, cached calls into ``core``, widgets.

Only the app imports this package; ``core`` never does.
"""
