"""``python -m effdl`` runs the command line."""

from effdl.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
