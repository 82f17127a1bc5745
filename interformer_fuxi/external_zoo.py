"""Models from a FuxiCTR 2.0.x source checkout's ``model_zoo/``, loaded by file path.

FuxiCTR's model folders are not one-to-one with class names. In v2.0.4 a model's package is
one of::

    <zoo>/<Folder>/src/                 most models (DIN, BST, DIEN, ...)
    <zoo>/<Folder>/model/               APG (APG_DCNv2, APG_DeepFM), DMIN, DMR, PEPNet (PPNet, PEPNet)
    <zoo>/<Folder>/<Folder>_torch/src/  DCN, DNN, DeepFM, WideDeep (beside a TensorFlow ``_tf`` copy)
    <zoo>/<Folder>_torch/model/         ONN
    <zoo>/multitask/<Folder>/src/       MMoE, PLE, SharedBottom

``model: X`` is the class ``X`` of the package in the folder named ``X`` if it defines one,
else of the one package whose source defines ``class X(``. TensorFlow copies (``*_tf``) are
never loaded. A package is imported by its path under a private module name, never as
``model_zoo`` (a name the fuxictr wheel itself installs into site-packages), so the working
directory does not matter.

The class is then given this package's evaluation (NE, vectorised gAUC, parameter count)
by putting ``CTRModel`` in front of it in the method resolution order: its constructor,
layers and forward are FuxiCTR's, the protocol is the same as for the built-in models.
"""
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass

from .errors import UserError

PACKAGE_NAMES = ("src", "model")  # the folder names FuxiCTR gives a model's package
MAX_DEPTH = 3                     # <zoo>/multitask/<Folder>/src, <zoo>/DCN/DCN_torch/src


@dataclass(frozen=True)
class ZooPackage:
    """One model package of a model zoo: ``path`` (holding ``__init__.py``) inside ``folder``,
    the zoo's top-level folder it belongs to (``DCN`` for ``DCN/DCN_torch/src``)."""
    folder: str
    path: str

    @property
    def model_dir(self):
        """Where FuxiCTR's ``run_expid.py`` for this package lives (and ``chdir``s to)."""
        return os.path.dirname(self.path)

    def classes(self):
        """Names of the classes its source files define (read, not imported)."""
        names = set()
        for entry in sorted(os.listdir(self.path)):
            if entry.endswith(".py"):
                with open(os.path.join(self.path, entry), errors="replace") as f:
                    names.update(re.findall(r"^class\s+(\w+)\s*[(:]", f.read(), re.MULTILINE))
        return names


def packages(zoo_dir):
    """Every model package under ``zoo_dir`` (TensorFlow ``*_tf`` copies skipped), sorted."""
    found = []
    for root, dirs, _ in os.walk(zoo_dir):
        depth = os.path.relpath(root, zoo_dir).count(os.sep) + (root != zoo_dir)
        dirs[:] = sorted(d for d in dirs if not d.endswith("_tf") and not d.startswith((".", "__")))
        if depth >= MAX_DEPTH:
            dirs[:] = []
        if depth and os.path.basename(root) in PACKAGE_NAMES and os.path.isfile(os.path.join(root, "__init__.py")):
            folder = os.path.relpath(root, zoo_dir).split(os.sep)[0]
            found.append(ZooPackage(folder, root))
            dirs[:] = []
    return found


def available(zoo_dir):
    """The zoo's top-level model folders that hold a package."""
    return sorted({p.folder for p in packages(zoo_dir)})


def class_names(zoo_dir):
    """Every class the zoo's packages define (for "did you mean")."""
    return set().union(*(p.classes() for p in packages(zoo_dir)))


def locate(zoo_dir, name):
    """The package that defines class ``name``: the one in the folder named ``name`` first,
    else the only one whose source defines it; None if none does."""
    if not os.path.isdir(zoo_dir):
        raise UserError(f"model_zoo: {zoo_dir} is not a directory (expected FuxiCTR's model_zoo/ folder)")
    candidates = packages(zoo_dir)
    own = [p for p in candidates if p.folder == name]
    for package in own:
        if name in package.classes():
            return package
    others = [p for p in candidates if p.folder != name and name in p.classes()]
    if len(others) > 1:
        raise UserError(f"model_zoo: class {name!r} is defined in several packages of {zoo_dir}: "
                        f"{', '.join(p.path for p in others)}")
    if others:
        return others[0]
    if own:  # the folder exists but its package does not show the class: let the import say why
        return own[0]
    return None


def find_model(zoo_dir, name):
    """The model class ``name`` from ``zoo_dir``, or None if no package of it defines one."""
    package = locate(zoo_dir, str(name))
    if package is None:
        return None
    module = _import(package)
    model_class = getattr(module, name, None)
    init = os.path.join(package.path, "__init__.py")
    if not isinstance(model_class, type):
        raise UserError(f"model_zoo: {init} defines no class {name!r}")
    return with_project_protocol(model_class)


def _import(package):
    module_name = "_fuxictr_zoo." + re.sub(r"\W", "_", os.path.abspath(package.path).strip(os.sep))
    if module_name in sys.modules:
        return sys.modules[module_name]
    init = os.path.join(package.path, "__init__.py")
    spec = importlib.util.spec_from_file_location(module_name, init, submodule_search_locations=[package.path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # before exec: the package's relative imports need it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise UserError(f"model_zoo: importing {init} failed: {type(exc).__name__}: {exc}") from None
    return module


def source_file(model_class):
    """The file that defines ``model_class`` (FuxiCTR's, for a class wrapped by the protocol)."""
    return inspect.getsourcefile(model_class.__dict__.get("_zoo_class", model_class))


def with_project_protocol(model_class):
    """``model_class`` with ``CTRModel``'s fit/evaluate/metrics in front of FuxiCTR's ``BaseModel``."""
    from fuxictr.pytorch.models import BaseModel

    from .models.base import CTRModel
    if issubclass(model_class, CTRModel):
        return model_class
    if not issubclass(model_class, BaseModel):
        raise UserError(f"model_zoo: {model_class.__name__} is not a FuxiCTR 2.0 BaseModel")
    return type(model_class.__name__, (CTRModel, model_class),
                {"__module__": model_class.__module__, "__doc__": model_class.__doc__, "_zoo_class": model_class})
