"""`python -m jobrunner ...` is the `jobrunner` command."""

from jobrunner.worker.cli import main

main()
