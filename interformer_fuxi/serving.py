"""A trained model as a plain function of named feature tensors: what export and serving see.

FuxiCTR's models read one ``[B, columns]`` batch tensor and slice it by the feature map.
A serving graph wants one input per feature, with its own dtype, and the score as the
only output: ``ServingModel`` gives that, from the embedding lookups to the sigmoid, with
no labels and no ``meta`` columns (the ``group_id`` is bookkeeping, not a model input).

Inputs, in feature-map order: ``categorical`` ids ``[B]`` int64, ``sequence`` ids ``[B, T]``
int64 (padding id 0, any ``T`` up to the field's ``max_len``), ``numeric`` values ``[B]``
float32. Ids are the encoded ones (the vocabulary of the run's feature processor; unseen
raw values map to its out-of-vocabulary index, as :mod:`interformer_fuxi.predict` does).
"""
import torch
from torch import nn

INPUT_DTYPES = {"categorical": torch.int64, "sequence": torch.int64, "numeric": torch.float32}


def input_features(feature_map):
    """``[(name, spec)]`` of the model's inputs: every feature but the ``meta`` ones, in order."""
    return [(name, spec) for name, spec in feature_map.features.items() if spec["type"] != "meta"]


class ServingModel(nn.Module):
    """``score = ServingModel(model)(*features)``: a trained CTR model over named feature tensors.

    Args:
        model: a trained model of this package (a ``CTRModel``), in eval mode for export.

    Shapes:
        one tensor per :func:`input_features` entry (``[B]`` or ``[B, T]``) -> score ``[B]``
        float32 (the click probability).

    Example::

        >>> serving = ServingModel(model).eval()
        >>> serving(*batch_inputs(model, batch)).shape
        torch.Size([128])
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.input_names = [name for name, _ in input_features(model.feature_map)]

    def forward(self, *features):
        return self.model(dict(zip(self.input_names, features)))["y_pred"].reshape(-1).float()


def serving_model(model, expid):
    """``ServingModel(model)`` for this package's models (which take named feature tensors)."""
    from .errors import UserError
    from .models.base import CTRModel

    if not isinstance(model, CTRModel):
        raise UserError(f"{expid}: {type(model).__name__} comes from a FuxiCTR model_zoo; scoring and export "
                        "serve this package's models (InterFormer and its baselines)")
    return ServingModel(model)


def batch_inputs(model, batch_data):
    """A FuxiCTR batch tensor ``[B, columns]`` as the serving inputs (a tuple, dtypes as served)."""
    X = model.get_inputs(batch_data)
    return tuple(X[name].to(INPUT_DTYPES[spec["type"]])
                 for name, spec in input_features(model.feature_map))


def signature(feature_map, model_id):
    """The inputs and output of the exported model, for ``signature.json``."""
    inputs = []
    for name, spec in input_features(feature_map):
        kind = spec["type"]
        entry = {"name": name, "type": kind, "dtype": str(INPUT_DTYPES[kind]).replace("torch.", ""),
                 "shape": ["batch", "seq_len"] if kind == "sequence" else ["batch"]}
        if kind in ("categorical", "sequence"):
            entry.update(vocab_size=int(spec["vocab_size"]), padding_idx=spec.get("padding_idx", 0),
                         oov_idx=spec.get("oov_idx"))
        if kind == "sequence":
            entry["max_len"] = int(spec["max_len"])
        if spec.get("share_embedding"):
            entry["share_embedding"] = spec["share_embedding"]
        inputs.append(entry)
    return {"model_id": model_id, "dataset_id": feature_map.dataset_id, "inputs": inputs,
            "outputs": [{"name": "score", "dtype": "float32", "shape": ["batch"],
                         "meaning": "click probability"}]}
