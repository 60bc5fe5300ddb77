"""Audio I/O, the mel front end, normalisation, the Griffin-Lim vocoder and metrics."""
