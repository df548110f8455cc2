"""The process: pidfile, signals, readiness, systemd notification and the main loop."""
