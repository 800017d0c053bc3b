"""The public API: every name ragopt exports resolves, and no room's module shadows an exported function."""

import importlib
import inspect
import pkgutil
import types

import ragopt


def test_every_exported_name_resolves():
    for name in ragopt.__all__:
        assert getattr(ragopt, name) is not None, name


def test_the_exported_functions_survive_importing_every_module():
    """A subpackage named like an export would replace it on ``ragopt`` once imported (``ragopt.ingest`` did)."""
    for module in pkgutil.walk_packages(ragopt.__path__, prefix="ragopt."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    for name in ragopt.__all__:
        value = getattr(ragopt, name)
        # An export may be a module (ragopt.plots is ragopt.ui.plots), never the subpackage ragopt.<name>.
        assert getattr(value, "__name__", None) != f"ragopt.{name}", f"ragopt.{name} is the subpackage, not the export"
    assert isinstance(ragopt.plots, types.ModuleType) and not isinstance(ragopt.ingest, types.ModuleType)
    assert inspect.signature(ragopt.ingest).parameters.keys() >= {"rag", "paths"}
