"""The SQLite store: database file, schema, operation log and daemon state."""

from mitod.store.database import Database
from mitod.store.errors import StoreError, StoreLockedError

__all__ = ["Database", "StoreError", "StoreLockedError"]
