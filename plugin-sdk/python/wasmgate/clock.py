"""Clocks and randomness from the host."""

from wit_world.imports import clock as _clock


def monotonic_ns() -> int:
    return _clock.monotonic_ns()


def wall_ms() -> int:
    return _clock.wall_ms()


def random_bytes(length: int) -> bytes:
    """At most 1024 bytes from a cryptographically secure generator."""
    return _clock.random_bytes(length)
