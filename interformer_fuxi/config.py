"""Load a FuxiCTR 2.0 expid (``Base`` + expid + dataset) and check it before anything runs.

Relative paths in a config (``data_root``, ``train_data``, ``valid_data``, ``test_data``,
``model_root``, a feature's ``pretrained_emb``) resolve against the directory that holds
the config directory, e.g. ``data/`` in ``<project>/config/dataset_config.yaml`` means
``<project>/data/``. That is FuxiCTR's convention (its runners ``chdir`` to the folder
holding ``config/``), made independent of the working directory.
"""
import difflib
import glob
import inspect
import os

import yaml
from fuxictr.utils import load_dataset_config, load_model_config

from .errors import UserError
from .metrics import SUPPORTED_METRICS

# Keys the runner, FuxiCTR's BaseModel, its optimizer/loss helpers and its data loader read.
RUNNER_KEYS = {
    "model", "dataset_id", "model_id", "task", "loss", "metrics", "monitor", "monitor_mode",
    "optimizer", "learning_rate", "embedding_regularizer", "net_regularizer", "batch_size",
    "epochs", "shuffle", "seed", "model_root", "num_workers", "verbose", "early_stop_patience",
    "save_best_only", "eval_steps", "reduce_lr_on_plateau", "max_gradient_norm",
    "feature_specs", "use_features", "group_id", "gpu", "debug_mode", "pickle_feature_encoder",
    "train_ctr", "model_zoo",
}
# Keys of a dataset section (FeatureProcessor, build_dataset, read_csv).
DATASET_KEYS = {
    "data_root", "data_format", "train_data", "valid_data", "test_data", "feature_cols",
    "label_col", "min_categr_count", "valid_size", "test_size", "split_type",
    "data_block_size", "num_buckets", "group_id", "sep", "nrows",
    "csv_header", "md5", "bad_rows", "oracle_data",  # validate.py and oracle.py
}
PATH_KEYS = ("data_root", "train_data", "valid_data", "test_data", "model_root", "model_zoo", "oracle_data")


def _yaml_files(config_dir, stem):
    files = glob.glob(os.path.join(config_dir, stem + ".yaml"))
    return files or sorted(glob.glob(os.path.join(config_dir, stem, "*.yaml")))


class ConfigLoader(yaml.SafeLoader):
    """Safe YAML plus ``!!python/tuple``, which FuxiCTR's sequence models use for field groups
    (``din_target_field: [!!python/tuple [item_id, cate_id]]``)."""


ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                             lambda loader, node: tuple(loader.construct_sequence(node)))


class ConfigDumper(yaml.SafeDumper):
    """Writes what :class:`ConfigLoader` reads, tuples included."""


ConfigDumper.add_representer(tuple, lambda dumper, value: dumper.represent_sequence(
    "tag:yaml.org,2002:python/tuple", list(value), flow_style=True))


def load_yaml(stream):
    """Parse a config file's text or stream (``!!python/tuple`` allowed)."""
    return yaml.load(stream, Loader=ConfigLoader)


def dump_yaml(data, stream=None, **kwargs):
    """Write config data so :func:`load_yaml` reads it back unchanged."""
    return yaml.dump(data, stream, Dumper=ConfigDumper, **kwargs)


def _read_yaml(path):
    try:
        with open(path) as f:
            data = load_yaml(f) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of ids to settings")
    return data


def read_sections(config_dir, stem):
    """All top-level sections of ``<stem>.yaml`` (or ``<stem>/*.yaml``) in one dict."""
    sections = {}
    for path in _yaml_files(config_dir, stem):
        for key, value in _read_yaml(path).items():
            sections.setdefault(key, value)
    return sections


def list_expids(config_dir):
    return sorted(k for k in read_sections(config_dir, "model_config") if k != "Base")


def suggest(word, candidates):
    """``"; did you mean 'x'?"`` for the closest candidate (case-insensitive), else ``""``."""
    by_lower = {str(c).lower(): c for c in candidates}
    match = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {by_lower[match[0]]!r}?" if match else ""


def load_expid(config_dir, expid, dataset_id=None):
    """The merged parameters of ``expid``, with its paths resolved; raises UserError.

    ``dataset_id`` replaces the expid's own (e.g. a ``dataset_id: TBD`` template) *before*
    the dataset's section is merged, so the run gets that dataset's data keys.
    """
    config_dir = os.path.abspath(config_dir)
    if not os.path.isdir(config_dir):
        raise UserError(f"--config: directory not found: {config_dir}")
    if not _yaml_files(config_dir, "model_config"):
        raise UserError(f"--config: {config_dir} has no model_config.yaml (or model_config/*.yaml)")
    models = read_sections(config_dir, "model_config")
    if expid not in models or expid == "Base":
        available = ", ".join(list_expids(config_dir))
        raise UserError(f"--expid: unknown experiment id {expid!r}{suggest(expid, models)} "
                        f"(available in {config_dir}: {available})")
    section = models[expid] or {}
    base = models.get("Base") or {}
    dataset_id = dataset_id or section.get("dataset_id", base.get("dataset_id"))
    datasets = read_sections(config_dir, "dataset_config")
    if dataset_id in (None, "TBD"):
        raise UserError(f"{expid}: dataset_id is {dataset_id or 'missing'}; this expid is a template, "
                        f"copy it and set dataset_id to one of: {', '.join(sorted(datasets))}")
    if dataset_id not in datasets:
        raise UserError(f"{expid}: dataset_id {dataset_id!r} is not in dataset_config"
                        f"{suggest(str(dataset_id), datasets)} (available: {', '.join(sorted(datasets))})")
    params = load_model_config(config_dir, expid)
    params.update(load_dataset_config(config_dir, dataset_id))
    params["_model_keys"] = sorted(set(base) | set(section))
    params["_dataset_keys"] = sorted(datasets[dataset_id] or {})
    resolve_paths(params, os.path.dirname(config_dir))
    return params


def load_model_config_section(config_dir, expid):
    """``Base`` + ``expid`` of model_config only (no dataset needed, e.g. for templates)."""
    models = read_sections(config_dir, "model_config")
    if expid not in models:
        raise UserError(f"--expid: unknown experiment id {expid!r}{suggest(expid, models)}")
    params = dict(models.get("Base") or {})
    params.update(models[expid] or {})
    params["model_id"] = expid
    return params


def resolve_paths(params, base_dir):
    for key in PATH_KEYS:
        value = params.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            params[key] = os.path.normpath(os.path.join(base_dir, value))
    for col in params.get("feature_cols") or []:
        emb = col.get("pretrained_emb") if isinstance(col, dict) else None
        if isinstance(emb, str) and not os.path.isabs(emb):
            col["pretrained_emb"] = os.path.normpath(os.path.join(base_dir, emb))
    params.setdefault("model_root", os.path.join(base_dir, "checkpoints"))


def init_keywords(model_class):
    """Constructor keywords of ``model_class`` and its bases (what a config may set)."""
    keys = set()
    for klass in inspect.getmro(model_class):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, p in inspect.signature(init).parameters.items():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name not in ("self", "feature_map"):
                keys.add(name)
    return keys


def check_keys(params, model_class):
    """Reject keys that nothing reads (FuxiCTR would silently ignore a typo)."""
    expid = params["model_id"]
    valid = RUNNER_KEYS | DATASET_KEYS | init_keywords(model_class)
    for key in params["_model_keys"]:
        if key not in valid:
            raise UserError(f"{expid}: unknown key {key!r} in model_config{suggest(key, valid)} "
                            f"(model {params['model']} does not read it)")
    for key in params["_dataset_keys"]:
        if key not in DATASET_KEYS | {"group_id"}:
            raise UserError(f"{params['dataset_id']}: unknown key {key!r} in dataset_config"
                            f"{suggest(key, DATASET_KEYS)}")
    for metric in list(params.get("metrics") or []) + _monitor_metrics(params.get("monitor")):
        if metric not in SUPPORTED_METRICS:
            raise UserError(f"{expid}: unknown metric {metric!r} in metrics/monitor"
                            f"{suggest(metric, SUPPORTED_METRICS)} (supported: {', '.join(SUPPORTED_METRICS)})")


def _monitor_metrics(monitor):
    if isinstance(monitor, str):
        return [monitor]
    if isinstance(monitor, dict):
        return list(monitor)
    return []
