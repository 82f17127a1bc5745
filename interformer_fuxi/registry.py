"""Model registry: the config's ``model:`` name -> a FuxiCTR 2.0 ``BaseModel`` class."""
from .errors import UserError

MODELS = {}


def register(model_class):
    """Class decorator: make ``model_class`` available to ``model: <ClassName>`` in configs."""
    MODELS[model_class.__name__] = model_class
    return model_class


def get_model(name):
    from . import models  # noqa: F401  (importing registers the built-in models)
    if name not in MODELS:
        from .config import suggest
        raise UserError(f"model: unknown model {name!r}{suggest(str(name), MODELS)} "
                        f"(available: {', '.join(sorted(MODELS))})")
    return MODELS[name]
