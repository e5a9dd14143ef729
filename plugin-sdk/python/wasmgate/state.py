"""Per-request state the host keeps between phases, private to this plugin. Instances are
shared between requests: carry what a later phase needs here, not in the plugin object."""

from typing import Optional, Union

from wit_world.imports import state as _state


def get(key: str) -> Optional[bytes]:
    return _state.get(key)


def set(key: str, value: Union[str, bytes]) -> bool:
    """False if the bounds (64 entries, 64 KiB per plugin and request) refuse it."""
    return _state.set(key, value.encode() if isinstance(value, str) else bytes(value))


def remove(key: str) -> bool:
    return _state.remove(key)
