"""Model registry: the config's ``model:`` name -> a FuxiCTR 2.0 ``BaseModel`` class."""
from .errors import UserError, suggest

MODELS = {}


def register(model_class):
    """Class decorator: make ``model_class`` available to ``model: <ClassName>`` in configs."""
    MODELS[model_class.__name__] = model_class
    return model_class


def get_model(name, model_zoo=None):
    """The class for ``model: name``: from ``model_zoo`` (a FuxiCTR checkout's model_zoo/) when
    one of its packages defines it (``external_zoo.locate``), else a built-in model."""
    from . import models  # noqa: F401  (importing registers the built-in models)
    if model_zoo:
        from .external_zoo import available, class_names, find_model
        model_class = find_model(model_zoo, str(name))
        if model_class is not None:
            return model_class
    if not isinstance(name, str) or name not in MODELS:
        names = set(MODELS) | (class_names(model_zoo) if model_zoo else set())
        where = f"built-in: {', '.join(sorted(MODELS))}"
        where += f"; in {model_zoo}: {', '.join(available(model_zoo))}" if model_zoo else \
            "; FuxiCTR's own models run with --model_zoo <FuxiCTR checkout>/model_zoo"
        raise UserError(f"model: unknown model {name!r}{suggest(str(name), names)} ({where})")
    return MODELS[name]
