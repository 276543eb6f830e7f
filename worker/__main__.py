"""`python -m worker ...` is the `jobrunner` command."""

from worker.cli import main

main()
