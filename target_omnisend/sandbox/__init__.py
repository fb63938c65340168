"""An Omnisend-compatible API server for offline tests, demos and rehearsals."""
