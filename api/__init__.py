"""The prediction API: a FastAPI front end over :mod:`core.serving` (``scanatlas serve``)."""
