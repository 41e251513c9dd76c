"""`python -m harness` entry point."""

from harness.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
