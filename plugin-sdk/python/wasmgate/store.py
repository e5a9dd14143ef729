"""The key-value store shared by every instance of the plugin (in memory, or Redis across
replicas). Keys are private to the plugin; `ttl_ms` 0 means no expiry. Every function raises
`StoreError` when the store refuses or cannot be reached."""

from typing import Optional, Union

from wit_world.imports import store as _store

from ._errors import StoreError, call


def _bytes(value: Union[str, bytes]) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def get(key: str) -> Optional[bytes]:
    return call(StoreError, _store.get, key)


def set(key: str, value: Union[str, bytes], ttl_ms: int = 0) -> None:
    call(StoreError, _store.set, key, _bytes(value), ttl_ms)


def delete(key: str) -> bool:
    return call(StoreError, _store.delete, key)


def increment(key: str, delta: int = 1, ttl_ms: int = 0) -> int:
    """Adds `delta` atomically and returns the new value; a new key expires after `ttl_ms`."""
    return call(StoreError, _store.increment, key, delta, ttl_ms)


def compare_and_swap(key: str, expected: Optional[bytes], new: Union[str, bytes], ttl_ms: int = 0) -> bool:
    return call(StoreError, _store.compare_and_swap, key, expected, _bytes(new), ttl_ms)
