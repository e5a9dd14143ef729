"""Steering the gateway's HTTP cache on a route with `cache = { ... }`. Each raises `EditError`
outside the phase it names."""

from wit_world.imports import cache as _cache

from ._errors import EditError, call


def set_key(key: str) -> None:
    """In `on_request_headers`: the key the request is looked up and stored under."""
    call(EditError, _cache.set_key, key)


def add_key_part(part: str) -> None:
    call(EditError, _cache.add_key_part, part)


def bypass() -> None:
    call(EditError, _cache.bypass)


def set_ttl_ms(ttl_ms: int) -> None:
    """In `on_response_headers`: store this response for `ttl_ms` (0: do not store it)."""
    call(EditError, _cache.set_ttl, ttl_ms)
