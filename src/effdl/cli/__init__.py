"""The ``effdl`` command line: argument parsing that calls the public API; no logic of its own."""
