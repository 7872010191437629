"""The ``scanatlas`` command line: a thin front end over ``core`` (argument parsing, progress
bars, printing). ``core`` never imports it."""
