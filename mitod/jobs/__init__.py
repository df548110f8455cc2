"""Built-in jobs: one module per task kind, plus the catalog that ties them to the engine."""
