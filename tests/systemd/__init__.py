"""Tests that run mitod's unit files under a real systemd in a throwaway box."""
