"""Attribution methods, one module each, found by name in ``METHODS``.

Every module of this package is imported here, so adding a method is adding one file that defines an
``AttributionMethod`` subclass decorated with ``@register`` (with its ``reference`` recipe for the tests' slow
reference); the CLI, the pages and the tests read ``METHODS``.
"""

import importlib
import pkgutil

from core.methods.base import METHODS, AttributionMethod, FactorBatch, ReferenceRecipe, get_method, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "AttributionMethod", "FactorBatch", "ReferenceRecipe", "get_method", "register"]
