"""`python -m effscope` runs the CLI."""

from effscope.cli import main

main()
