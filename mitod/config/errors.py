"""The exception raised for an invalid configuration."""


class ConfigError(Exception):
    """One or more configuration errors, each naming file, key path and expectation."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))
