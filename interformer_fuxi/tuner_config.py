"""A FuxiCTR tuner yaml -> the list of grid trials and their expanded config folder.

The tuner yaml (FuxiCTR / BARS form)::

    base_config: ../          # config folder of the base expid
    base_expid: InterFormer_amazon
    dataset_id: amazonelectronics_x1   # optional, default: the base expid's
    tuner_space:              # key -> list of values (a scalar is one value)
        learning_rate: [1.e-1, 1.e-2, 1.e-3]
        head_hidden_units: [[1024, 512, 256], [512, 256, 128]]   # lists are listed
        din_target_field: [!!python/tuple [item_id, cate_id]]      # FuxiCTR's field groups
        min_categr_count: [1, 2]                                   # dataset-level keys too
    # optional, as FuxiCTR: inline model_config / dataset_config sections, used instead of
    # those of base_config.

The grid is FuxiCTR 2.0.4's ``autotuner.enumerate_params``, so a BARS user's sweep gets the
same trials, in the same order, with the same expids (``<base>_<index>_<hash>``) and dataset
ids (``<dataset_id>_<hash>`` for CSV data) as FuxiCTR gives for the same file, and resumes
against the results CSV FuxiCTR would have written. Two departures: FuxiCTR's ``debug_mode``
randomness (a random number in every hash) is left out, so expids are always reproducible;
and a tuned dataset key works (FuxiCTR 2.0.4 fails with ``KeyError: 'model_id'`` on the
second dataset combination).

Beyond FuxiCTR:

* ``base_config`` resolves against the yaml's folder, else the working directory, else (with
  ``--model_zoo``) FuxiCTR's ``benchmark/`` folder beside that model_zoo, where FuxiCTR's own
  tuner runs (BARS's ``base_config: ../model_zoo/DIN/config/``); the first that exists wins;
* the expanded ``model_config.yaml`` / ``dataset_config.yaml`` go to ``<yaml dir>/<yaml
  name>/`` (FuxiCTR's place) file by file through a temporary file and a rename, with their
  relative paths rewritten so that they point where they pointed for the base config (see
  :mod:`interformer_fuxi.config` for which folder that is);
* mistakes (missing ``base_expid``, a key no part of the run reads, an empty value list, …)
  raise :class:`UserError` with one line naming the yaml and the key.
"""
import copy
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field

import yaml
from fuxictr.utils import print_to_json

from .atomic import atomic_write
from .config import PATH_KEYS, choose_base, dump_yaml, load_yaml, model_dir, path_bases, read_sections
from .config_keys import ALIASES, DATASET_KEYS, IGNORED_KEYS, RUNNER_KEYS, init_keywords
from .errors import UserError, suggest

TOP_KEYS = ("base_config", "base_expid", "dataset_id", "tuner_space", "model_config", "dataset_config")


@dataclass
class Trial:
    """One grid point: ``section`` is its full model_config section (Base merged in)."""
    index: int
    expid: str
    dataset_id: str
    section: dict
    tuned: dict  # tuned key -> this trial's value, in tuner_space order

    @property
    def hash(self):
        return self.expid.rsplit("_", 1)[1]


@dataclass
class TunerConfig:
    path: str                 # the tuner yaml, absolute
    base_config: str          # the base config folder, absolute (None with inline configs only)
    base_expid: str
    dataset_id: str           # the tuner's dataset id (before per-combination hashing)
    space: dict               # key -> list of values
    model: dict               # FuxiCTR's model_dict: Base + base expid section + model_id, as configured
    dataset: dict             # FuxiCTR's dataset_dict, as configured
    path_base: str            # the folder the configured relative paths resolve against
    dataset_keys: list = field(default_factory=list)  # tuned keys of the dataset section
    model_keys: list = field(default_factory=list)    # tuned keys of the model settings
    expid_prefix: str = ""
    model_zoo: str = None     # a FuxiCTR checkout's model_zoo/, for the trials' run_expid.py

    @property
    def name(self):
        return os.path.splitext(os.path.basename(self.path))[0]

    @property
    def config_dir(self):
        """Where the expanded configs go: FuxiCTR's ``<yaml dir>/<yaml name>/``."""
        return os.path.join(os.path.dirname(self.path), self.name)


def fuxictr_hash(params):
    """FuxiCTR's 8-digit id of a settings dict: md5 of the sorted characters of its
    ``print_to_json`` text (order-free, so it is what FuxiCTR's expids and dataset ids carry)."""
    return hashlib.md5("".join(sorted(print_to_json(params))).encode("utf-8")).hexdigest()[0:8]


def load_tuner_config(path, model_zoo=None):
    """Read and check a tuner yaml; raises UserError naming the yaml and the offending key."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UserError(f"--config: tuner yaml not found: {path}")
    try:
        with open(path) as f:
            raw = load_yaml(f)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping with base_expid and tuner_space")
    for key in raw:
        if key not in TOP_KEYS:
            raise UserError(f"{path}: unknown top-level key {key!r}{suggest(key, TOP_KEYS)} "
                            f"(expected: {', '.join(TOP_KEYS)})")
    if not raw.get("base_expid"):
        raise UserError(f"{path}: base_expid is missing (the expid in base_config to tune)")
    space = raw.get("tuner_space")
    if not isinstance(space, dict) or not space:
        raise UserError(f"{path}: tuner_space is missing or empty (expected a mapping of key -> list of values)")
    base_expid = str(raw["base_expid"])
    inline_models = _inline(raw, "model_config", path)
    inline_datasets = _inline(raw, "dataset_config", path)
    base_config = None
    if not inline_models or not inline_datasets:
        base_config = _base_config_dir(path, raw, model_zoo)

    # FuxiCTR's model_dict: the inline section alone, else load_model_config (Base + expid + model_id)
    if inline_models:
        if base_expid not in inline_models:
            raise UserError(f"{path}: base_expid {base_expid!r} is not in its model_config"
                            f"{suggest(base_expid, inline_models)}")
        model = copy.deepcopy(inline_models[base_expid] or {})
    else:
        models = read_sections(base_config, "model_config")
        if base_expid not in models or base_expid == "Base":
            raise UserError(f"{path}: base_expid {base_expid!r} is not in {base_config}/model_config.yaml"
                            f"{suggest(base_expid, models)}")
        model = copy.deepcopy(dict(models.get("Base") or {}, **(models[base_expid] or {})))
        model["model_id"] = base_expid

    dataset_id = raw.get("dataset_id") or model.get("dataset_id")
    if dataset_id in (None, "TBD"):
        raise UserError(f"{path}: dataset_id is not set (base expid {base_expid} has dataset_id: "
                        f"{model.get('dataset_id', 'missing')}); add dataset_id to the tuner yaml")
    dataset_id = str(dataset_id)
    # FuxiCTR's dataset_dict: the inline section, else load_dataset_config (which adds dataset_id)
    datasets = inline_datasets or read_sections(base_config, "dataset_config")
    if dataset_id not in datasets:
        where = "its dataset_config" if inline_datasets else f"{base_config}/dataset_config.yaml"
        raise UserError(f"{path}: dataset_id {dataset_id!r} is not in {where}{suggest(dataset_id, datasets)}")
    dataset = copy.deepcopy(datasets[dataset_id] or {})
    if not inline_datasets:
        dataset = dict(dataset_id=dataset_id, **{k: v for k, v in dataset.items() if k != "dataset_id"})
    prefix = base_expid
    if model.get("dataset_id") == "TBD":  # FuxiCTR renames a template expid to <model>_<dataset_id>
        model["dataset_id"] = dataset_id
        prefix = f"{model.get('model')}_{dataset_id}"

    config_parent = os.path.dirname(base_config) if base_config else os.path.dirname(path)
    bases = path_bases(config_parent, model_dir(model_zoo, model.get("model")))
    chosen = choose_base(dict(dataset, dataset_id=dataset_id), bases)
    cfg = TunerConfig(path=path, base_config=base_config, base_expid=base_expid,
                      dataset_id=dataset_id, space={}, model=model, dataset=dataset,
                      path_base=(chosen or bases[0])[0], expid_prefix=prefix, model_zoo=model_zoo)
    _check_space(cfg, space)
    return cfg


def _base_config_dir(path, raw, model_zoo):
    """``base_config`` against the yaml's folder, the working directory or FuxiCTR's benchmark/."""
    value = str(raw.get("base_config", "."))
    bases = [os.path.dirname(path), os.getcwd()]
    if model_zoo:
        bases.append(os.path.join(os.path.dirname(model_zoo), "benchmark"))
    tried = [os.path.normpath(os.path.join(b, value)) for b in bases]
    # FuxiCTR v2.0.4 moved DCN, DNN, DeepFM, ... into <Folder>/<Folder>_torch/: BARS's yamls
    # still name <Folder>/config
    moved = [os.path.join(os.path.dirname(t), os.path.basename(os.path.dirname(t)) + "_torch", "config")
             for t in tried if os.path.basename(t) == "config"]
    found = next((t for t in tried + moved if os.path.isdir(t)), None)
    if found is None:
        raise UserError(f"{path}: base_config folder not found: {' or '.join(tried)} (base_config resolves "
                        f"against the yaml's folder, the working directory"
                        f"{', FuxiCTR benchmark/ beside --model_zoo' if model_zoo else ''})")
    if not read_sections(found, "model_config"):
        raise UserError(f"{path}: base_config folder {found} has no model_config.yaml "
                        f"(base_config names the config folder of base_expid, e.g. base_config: ../)")
    return found


def _inline(raw, key, path):
    sections = raw.get(key) or {}
    if not isinstance(sections, dict):
        raise UserError(f"{path}: {key} must be a mapping of ids to settings")
    return copy.deepcopy(sections)


def _check_space(cfg, space):
    from .registry import get_model
    model_class = get_model(cfg.model.get("model"), cfg.model_zoo)
    model_valid = set(cfg.model) | RUNNER_KEYS | init_keywords(model_class) | set(ALIASES) | set(IGNORED_KEYS)
    dataset_valid = set(cfg.dataset) | (DATASET_KEYS - RUNNER_KEYS)
    for key, values in space.items():
        key = str(key)
        if key in ("dataset_id", "model_id", "model"):
            raise UserError(f"{cfg.path}: tuner_space.{key} cannot be tuned "
                            f"(set dataset_id at the top level; one yaml tunes one model)")
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise UserError(f"{cfg.path}: tuner_space.{key} is an empty list; give at least one value")
        base = cfg.dataset.get(key, cfg.model.get(key))
        # FuxiCTR's field groups are lists of tuples, and a tuple is one group: only a bare value
        # where the base has a list is a mistake (head_hidden_units: [512, 256] = two trials)
        if isinstance(base, list) and not all(isinstance(v, (list, tuple)) or v is None for v in values):
            raise UserError(f"{cfg.path}: tuner_space.{key} takes lists ({key}: {json.dumps(base)} in the base "
                            f"config), so give a list of them, e.g. {key}: [{json.dumps(base)}]")
        # as FuxiCTR, a key of the base dataset section is tuned there, one of the base model
        # settings there (both, if both have it); a new key goes where it is read
        in_dataset = key in cfg.dataset or (key not in cfg.model and key in dataset_valid)
        if in_dataset:
            cfg.dataset_keys.append(key)
        if key in cfg.model or not in_dataset:
            cfg.model_keys.append(key)
        if not in_dataset and key not in model_valid:
            raise UserError(f"{cfg.path}: unknown key {key!r} in tuner_space"
                            f"{suggest(key, model_valid | dataset_valid)} (model {cfg.model.get('model')} "
                            f"and dataset {cfg.dataset_id} do not read it)")
        cfg.space[key] = values
    if cfg.dataset_keys and cfg.dataset.get("data_format", "csv") != "csv":
        raise UserError(f"{cfg.path}: tuner_space.{cfg.dataset_keys[0]} is a dataset key, but "
                        f"{cfg.dataset_id} has data_format {cfg.dataset.get('data_format')!r}: only CSV "
                        f"datasets can be rebuilt per trial")


def _combinations(settings, space):
    """FuxiCTR's product: every key of ``settings`` in order, tuned keys over their values."""
    keys = list(settings)
    choices = [space[k] if k in space else [settings[k]] for k in keys]
    return [dict(zip(keys, values)) for values in itertools.product(*choices)]


def enumerate_trials(cfg):
    """All grid points in FuxiCTR's order and naming; returns (trials, datasets).

    As FuxiCTR: the product runs over the base settings' keys in their order (last fastest),
    tuned keys over their values, and over the dataset combinations innermost; keys tuned but
    absent from the base settings (FuxiCTR refuses them) come last. ``datasets`` maps each
    dataset id the trials use to its section (paths as configured).
    """
    model_space = {k: cfg.space[k] for k in cfg.model_keys}
    model = dict(cfg.model, **{k: None for k in model_space if k not in cfg.model})
    dataset = dict(cfg.dataset, **{k: None for k in cfg.dataset_keys if k not in cfg.dataset})
    dataset_combos = {}
    for combo in _combinations(dataset, cfg.space):
        csv = combo.get("data_format", "csv") != "h5"
        dataset_combos[f"{cfg.dataset_id}_{fuxictr_hash(combo)}" if csv else cfg.dataset_id] = combo
    trials, datasets = [], {}
    pairs = itertools.product(_combinations(model, model_space), dataset_combos.items())
    for index, (settings, (dataset_id, combo)) in enumerate(pairs, start=1):
        section = copy.deepcopy(settings)
        section["dataset_id"] = dataset_id
        section.pop("model_id", None)
        expid = f"{cfg.expid_prefix}_{index:03d}_{fuxictr_hash(section)}"
        section.setdefault("model_root", "checkpoints/")  # after the hash, as FuxiCTR's default is implicit
        datasets.setdefault(dataset_id, {k: copy.deepcopy(v) for k, v in combo.items() if k != "dataset_id"})
        tuned = {k: (section if k in cfg.model_keys else combo)[k] for k in cfg.space}
        trials.append(Trial(index=index, expid=expid, dataset_id=dataset_id, section=section, tuned=tuned))
    return trials, datasets


def select_trials(trials, tags):
    """Trials named by ``tags``: a full expid, an index (``3`` or ``003``) or a hash, exactly."""
    if not tags:
        return list(trials)
    chosen = []
    for tag in tags:
        tag = str(tag)
        hits = [t for t in trials if tag in (t.expid, t.hash) or (tag.isdigit() and int(tag) == t.index)]
        if not hits:
            raise UserError(f"--tag: {tag!r} matches no trial (give an expid, an index 1-{len(trials)} "
                            f"or a hash, e.g. {trials[0].expid})")
        chosen += [t for t in hits if t not in chosen]
    return sorted(chosen, key=lambda t: t.index)


def rebase_paths(section, from_dir, to_dir):
    """A copy of ``section`` whose relative paths, meant against ``from_dir``, point the same
    place from ``to_dir``."""
    section = copy.deepcopy(section)

    def move(value):
        if isinstance(value, str) and value and not os.path.isabs(value):
            return os.path.relpath(os.path.normpath(os.path.join(from_dir, value)), to_dir)
        return value

    for key in PATH_KEYS:
        if key in section:
            section[key] = move(section[key])
    for col in section.get("feature_cols") or []:
        if isinstance(col, dict) and "pretrained_emb" in col:
            col["pretrained_emb"] = move(col["pretrained_emb"])
    return section


def write_yaml_atomic(path, data, header=""):
    """Write ``data`` as YAML to ``path`` atomically (temporary file, then rename)."""
    with atomic_write(path) as f:
        f.write(header)
        dump_yaml(data, f, default_flow_style=None, sort_keys=False, indent=4, width=120)


def write_expanded(cfg, trials, datasets):
    """Write ``model_config.yaml`` (one section per trial) and ``dataset_config.yaml`` into
    ``cfg.config_dir``; returns that folder."""
    out = cfg.config_dir
    target = os.path.dirname(out)  # a run resolves the folder's paths against this first
    header = f"# Expanded from {os.path.basename(cfg.path)} by run_param_tuner.py; regenerated on each run.\n"
    write_yaml_atomic(os.path.join(out, "dataset_config.yaml"),
                      {k: rebase_paths(v, cfg.path_base, target) for k, v in datasets.items()}, header)
    write_yaml_atomic(os.path.join(out, "model_config.yaml"),
                      {t.expid: rebase_paths(t.section, cfg.path_base, target) for t in trials}, header)
    return out


def resolved(section, cfg, key):
    """The absolute path of ``section[key]`` as a run resolves it (``None`` if unset)."""
    value = section.get(key)
    if not value:
        return None
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(cfg.path_base, value))
