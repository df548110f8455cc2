"""Errors raised by the store, each naming the database file and what to do."""


class StoreError(Exception):
    """The database cannot be used. The message gives the cause and what to do."""


class StoreLockedError(StoreError):
    """Another process held the database's write lock for longer than mitod waits."""
