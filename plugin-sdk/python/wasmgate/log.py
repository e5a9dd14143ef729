"""The plugin's log: lines appear in the gateway's log under the plugin's name. `print` goes
there too, at info."""

from wit_world.imports import log as _log
from wit_world.imports.types import Level


def trace(message: str) -> None:
    _log.write(Level.TRACE, message)


def debug(message: str) -> None:
    _log.write(Level.DEBUG, message)


def info(message: str) -> None:
    _log.write(Level.INFO, message)


def warn(message: str) -> None:
    _log.write(Level.WARN, message)


def error(message: str) -> None:
    _log.write(Level.ERROR, message)
