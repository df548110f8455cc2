"""Command-line entry points: ``mitod`` (the daemon) and ``mitoctl`` (the client)."""
