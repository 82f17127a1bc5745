"""Load a FuxiCTR 2.0 expid (``Base`` + expid + dataset) with its paths resolved.

Relative paths in a config (``data_root``, ``train_data``, ``valid_data``, ``test_data``,
``model_root``, ``oracle_data``, a feature's ``pretrained_emb``) resolve against one folder,
the first of these under which the run's input (``train_data``, or the data already built in
``<data_root>/<dataset_id>``) exists:

1. the folder that holds the config folder (``<project>/config/`` -> ``<project>/``: this
   project's layout, independent of the working directory);
2. the working directory (BARS's instructions run from inside a FuxiCTR model folder, with
   paths like ``../data/Amazon/...``);
3. with a FuxiCTR ``model_zoo``, the folder of the model's own ``run_expid.py`` (where
   FuxiCTR's runner ``chdir``s, e.g. ``<model_zoo>/DIN/``).

If none has it, the first is used and the missing-file error lists every path tried. All of a
run's relative paths use the same folder, so outputs (``model_root``, the built H5 under
``data_root``) go next to the inputs, as FuxiCTR would put them.
"""
import copy
import glob
import os

import yaml

from .config_keys import apply_aliases
from .errors import UserError, suggest

PATH_KEYS = ("data_root", "train_data", "valid_data", "test_data", "model_root", "oracle_data")


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


# A config is small: more nodes than this (YAML aliases can make a few lines mean billions of
# values) or deeper nesting is refused before anything walks it.
MAX_NODES, MAX_DEPTH = 100_000, 50


def _read_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f) or {}
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError, ValueError, TypeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0] if not isinstance(exc, RecursionError) \
            else "nested too deeply"
        raise UserError(f"{path}: invalid YAML ({reason})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of ids to settings")
    names = [k for k in data if not isinstance(k, str)]
    if names:
        raise UserError(f"{path}: section names must be text, got {names[0]!r}"[:300])
    _check_size(path, data)
    return data


def _check_size(path, data):
    """Refuse configs with more than ``MAX_NODES`` values (counting shared ones each time) or
    deeper than ``MAX_DEPTH``, walking no more than that."""
    budget, stack = MAX_NODES, [(data, 0)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0 or depth > MAX_DEPTH:
            raise UserError(f"{path}: too large or too deeply nested for a config "
                            f"(more than {MAX_NODES} values or {MAX_DEPTH} levels; YAML aliases?)")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node if isinstance(k, tuple))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def read_sections(config_dir, stem):
    """All top-level sections of ``<stem>.yaml`` (or ``<stem>/*.yaml``) in one dict."""
    sections = {}
    for path in _yaml_files(config_dir, stem):
        for key, value in _read_yaml(path).items():
            sections.setdefault(key, value)
    return sections


def list_expids(config_dir):
    return sorted(k for k in read_sections(config_dir, "model_config") if k != "Base")


def load_expid(config_dir, expid, dataset_id=None, model_zoo=None):
    """The merged parameters of ``expid``, with its paths resolved; raises UserError.

    ``dataset_id`` replaces the expid's own (e.g. a ``dataset_id: TBD`` template) *before*
    the dataset's section is merged, so the run gets that dataset's data keys. ``model_zoo``
    (absolute) replaces the expid's ``model_zoo`` key.
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
    section = _mapping(models[expid] or {}, f"model_config section {expid}")
    base = _mapping(models.get("Base") or {}, "model_config section Base")
    dataset_id = dataset_id or section.get("dataset_id", base.get("dataset_id"))
    datasets = read_sections(config_dir, "dataset_config")
    if not isinstance(dataset_id, (str, type(None))):
        raise UserError(f"{expid}: dataset_id must be a name, got {dataset_id!r}"[:300])
    if dataset_id in (None, "TBD"):
        raise UserError(f"{expid}: dataset_id is {dataset_id or 'missing'}; this expid is a template, "
                        f"copy it and set dataset_id to one of: {', '.join(sorted(datasets))}")
    if dataset_id not in datasets:
        raise UserError(f"{expid}: dataset_id {dataset_id!r} is not in dataset_config"
                        f"{suggest(str(dataset_id), datasets)} (available: {', '.join(sorted(datasets))})")
    _mapping(datasets[dataset_id] or {}, f"dataset_config section {dataset_id}")
    params = copy.deepcopy(dict(base, **section))  # FuxiCTR's load_config: Base, expid, then dataset
    params["model_id"] = expid
    inner = (datasets[dataset_id] or {}).get("dataset_id", dataset_id)
    if inner != dataset_id:
        raise UserError(f"dataset_config section {dataset_id}: its dataset_id key says {inner!r}; "
                        "drop the key (the section's name is the dataset_id)"[:300])
    params.update(copy.deepcopy(dict(datasets[dataset_id] or {}, dataset_id=dataset_id)))
    params["_model_keys"] = sorted(set(base) | set(section))
    params["_dataset_keys"] = sorted(datasets[dataset_id] or {})
    params["_alias_notes"] = apply_aliases(params)
    if model_zoo:
        params["model_zoo"] = model_zoo
    parent = os.path.dirname(config_dir)
    for key in ("model", "model_zoo"):
        if params.get(key) is not None and not isinstance(params[key], str):
            raise UserError(f"{expid}: {key} must be a name, got {params[key]!r}"[:300])
    if params.get("model_zoo"):
        params["model_zoo"] = first_existing(params["model_zoo"], [parent, os.getcwd()])
    resolve_paths(params, path_bases(parent, model_dir(params.get("model_zoo"), params.get("model"))))
    return params


def _mapping(value, where):
    """``value`` if it is a mapping with string keys, else one clear error."""
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping of keys to values, got {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise UserError(f"{where}: keys must be names, got {bad[0]!r}"[:300])
    return value


def load_model_config_section(config_dir, expid):
    """``Base`` + ``expid`` of model_config only (no dataset needed, e.g. for templates)."""
    models = read_sections(config_dir, "model_config")
    if expid not in models:
        raise UserError(f"--expid: unknown experiment id {expid!r}{suggest(expid, models)}")
    params = dict(models.get("Base") or {})
    params.update(models[expid] or {})
    params["model_id"] = expid
    return params


def first_existing(path, bases):
    """``path`` against the first of ``bases`` where it exists (else against the first base)."""
    if os.path.isabs(path):
        return path
    tried = [os.path.normpath(os.path.join(base, path)) for base in bases]
    return next((p for p in tried if os.path.exists(p)), tried[0])


def model_dir(model_zoo, model):
    """The FuxiCTR folder of class ``model`` in ``model_zoo`` (None without a zoo or folder)."""
    if not model_zoo or not os.path.isdir(model_zoo):
        return None
    from .external_zoo import locate
    package = locate(model_zoo, str(model))
    return package.model_dir if package else None


def path_bases(config_parent, fuxictr_model_dir=None):
    """The candidate folders for relative paths, in order, each with why it is one."""
    bases = [(config_parent, "the folder holding the config folder"), (os.getcwd(), "the working directory")]
    if fuxictr_model_dir:
        bases.append((fuxictr_model_dir, "the FuxiCTR model folder, where FuxiCTR's run_expid.py runs"))
    unique = []
    for path, why in bases:
        if path not in [p for p, _ in unique]:
            unique.append((path, why))
    return unique


def choose_base(params, bases):
    """The first ``(folder, why)`` of ``bases`` under which ``params``' input exists, or None."""
    return next(((p, why) for p, why in bases if _has_input(params, p)), None)


def _has_input(params, base):
    train = params.get("train_data")
    if isinstance(train, str) and train and os.path.exists(os.path.join(base, train)):
        return True
    root = params.get("data_root")
    return isinstance(root, str) and bool(root) and os.path.isfile(
        os.path.join(base, root, str(params.get("dataset_id")), "feature_map.json"))


def resolve_paths(params, bases):
    """Make the relative paths of ``params`` absolute against the first of ``bases`` (from
    :func:`path_bases`) that holds the run's input. For error messages, ``params['_path_rule']``
    says which folder was chosen and why, and ``params['_paths_tried']`` maps each relative
    path's key to the absolute paths it stands for (every base's, when none holds the input)."""
    chosen = choose_base(params, bases)
    base_dir = (chosen or bases[0])[0]
    listing = "; ".join(f"{p} ({why})" for p, why in bases)
    if chosen:
        params["_path_rule"] = (f"relative paths resolve against {chosen[0]} ({chosen[1]}), the first "
                                f"folder holding train_data or the built data, of: {listing}")
    else:
        params["_path_rule"] = ("relative paths resolve against the first folder holding train_data "
                                f"or the built data, of: {listing}; none holds them")
    tried = params["_paths_tried"] = {}

    def resolve(key, value):
        if not (isinstance(value, str) and value) or os.path.isabs(value):
            return value
        tried[key] = [os.path.normpath(os.path.join(p, value)) for p, _ in ([chosen] if chosen else bases)]
        return tried[key][0]

    for key in PATH_KEYS:
        if key in params:
            params[key] = resolve(key, params[key])
    for col in params.get("feature_cols") or []:
        if isinstance(col, dict) and "pretrained_emb" in col:
            col["pretrained_emb"] = resolve(f"pretrained_emb of {col.get('name')}", col["pretrained_emb"])
    params.setdefault("model_root", os.path.join(base_dir, "checkpoints"))


def path_not_found(params, key, path):
    """The one-line error for a configured file that does not exist: the absolute paths tried
    and the resolution rule."""
    tried = params.get("_paths_tried", {}).get(key, [path])
    rule = params.get("_path_rule", "absolute path")
    return UserError(f"{params['dataset_id']}: {key} file not found: {' or '.join(tried)} ({rule})")
