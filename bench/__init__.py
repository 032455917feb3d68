"""edgeseq's benchmark suite over the trained zoo (``make bench``); never imported by the package."""
