"""The HTTP status endpoint: health probe and status API."""
