"""Models from a FuxiCTR 2.0.x source checkout: ``<model_zoo>/<Model>/src`` loaded by file path.

FuxiCTR's repository keeps each model in ``model_zoo/<Model>/src/`` (``__init__.py`` plus
``<Model>.py``), importable only from inside that folder. Here the ``src`` package is loaded
by its path under a private module name, never as ``model_zoo`` (a name the fuxictr wheel
itself installs into site-packages), so the working directory does not matter.

The class is then given this package's evaluation (NE, vectorised gAUC, parameter count)
by putting ``CTRModel`` in front of it in the method resolution order: its constructor,
layers and forward are FuxiCTR's, the protocol is the same as for the built-in models.
"""
import importlib.util
import os
import sys

from .errors import UserError


def available(zoo_dir):
    """Model folders under ``zoo_dir`` that have a ``src/__init__.py``."""
    return sorted(name for name in os.listdir(zoo_dir)
                  if os.path.isfile(os.path.join(zoo_dir, name, "src", "__init__.py")))


def find_model(zoo_dir, name):
    """The model class ``name`` from ``<zoo_dir>/<name>/src``, or None if there is no such folder."""
    if not os.path.isdir(zoo_dir):
        raise UserError(f"model_zoo: {zoo_dir} is not a directory (expected FuxiCTR's model_zoo/ folder)")
    src = os.path.join(zoo_dir, name, "src")
    init = os.path.join(src, "__init__.py")
    if not os.path.isfile(init):
        return None
    module_name = f"_fuxictr_zoo.{name}"
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        spec = importlib.util.spec_from_file_location(module_name, init, submodule_search_locations=[src])
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before exec: the package's relative imports need it
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise UserError(f"model_zoo: importing {init} failed: {type(exc).__name__}: {exc}") from None
    model_class = getattr(module, name, None)
    if not isinstance(model_class, type):
        raise UserError(f"model_zoo: {init} defines no class {name!r}")
    return with_project_protocol(model_class)


def with_project_protocol(model_class):
    """``model_class`` with ``CTRModel``'s fit/evaluate/metrics in front of FuxiCTR's ``BaseModel``."""
    from fuxictr.pytorch.models import BaseModel

    from .models.base import CTRModel
    if issubclass(model_class, CTRModel):
        return model_class
    if not issubclass(model_class, BaseModel):
        raise UserError(f"model_zoo: {model_class.__name__} is not a FuxiCTR 2.0 BaseModel")
    return type(model_class.__name__, (CTRModel, model_class),
                {"__module__": model_class.__module__, "__doc__": model_class.__doc__})
