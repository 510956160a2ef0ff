"""The benchmark: the gateway beside the API server it writes to (``make bench``)."""
