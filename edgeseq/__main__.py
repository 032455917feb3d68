"""``python -m edgeseq ...`` runs the command line, e.g. where the ``edgeseq`` script is not on PATH."""

from edgeseq.cli import main

main()
