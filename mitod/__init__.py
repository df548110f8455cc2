"""mitod: an autonomous monitoring and self-maintenance daemon for one Linux host."""

__version__ = "0.1.0"
