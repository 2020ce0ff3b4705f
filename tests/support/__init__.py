"""Reusable test helpers (servers, fakes)."""
