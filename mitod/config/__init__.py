"""Configuration: one TOML file plus includes, loaded into typed, frozen objects."""

from mitod.config.errors import ConfigError
from mitod.config.loader import DEFAULT_CONFIG_PATH, Config, load_config
from mitod.config.site import SiteConfig, redact_url

__all__ = ["Config", "ConfigError", "DEFAULT_CONFIG_PATH", "SiteConfig", "load_config",
           "redact_url"]
