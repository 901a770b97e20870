"""`python -m resgan`: the same command line as the `resgan` script."""

from resgan.cli import main

main()
