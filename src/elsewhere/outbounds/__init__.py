"""Outbounds carry sessions on: direct, block, or through a proxy protocol. Every module in
this package registers itself; a new protocol is a new file here."""

import importlib
import pkgutil


def load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
