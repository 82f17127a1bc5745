"""A FuxiCTR tuner yaml -> the list of grid trials and their expanded config folder.

The tuner yaml (FuxiCTR / BARS form)::

    base_config: ../          # config folder of the base expid, relative to this yaml
    base_expid: InterFormer_amazon
    dataset_id: amazonelectronics_x1   # optional, default: the base expid's
    tuner_space:              # key -> list of values (a scalar is one value)
        learning_rate: [1.e-1, 1.e-2, 1.e-3]
        head_hidden_units: [[1024, 512, 256], [512, 256, 128]]   # lists are listed
        min_categr_count: [1, 2]                                   # dataset-level keys too
    # optional, as FuxiCTR: inline model_config / dataset_config sections, used before
    # (and overriding) those of base_config.

Differences from FuxiCTR's ``enumerate_params``:

* every distinct dataset config gets its own ``dataset_id`` (``<dataset_id>_<hash>``) and so
  its own data folder, also for CSV data with an ``h5`` ``data_format`` nowhere in sight;
  FuxiCTR gives all combinations of an H5 dataset one id, so trials silently share data;
* expids are ``<base>_<index>_<hash>`` with the hash taken over the trial's settings only
  (FuxiCTR hashes the sorted *characters* of its JSON and adds randomness in debug mode),
  so a rerun of the same yaml yields the same expids and can skip finished trials;
* the expanded ``model_config.yaml`` / ``dataset_config.yaml`` go to ``<yaml dir>/<yaml
  name>/`` (FuxiCTR's place) file by file through a temporary file and a rename;
* relative paths (``data_root``, ``train_data``, ``model_root``, …) keep meaning what they mean
  in ``base_config``: the project convention resolves them against the folder holding the
  config folder, so they are rewritten relative to the expanded folder's parent;
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

from .atomic import atomic_write
from .config import DATASET_KEYS, PATH_KEYS, RUNNER_KEYS, dump_yaml, init_keywords, read_sections, suggest
from .errors import UserError

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
    base_config: str          # the base config folder, absolute
    base_expid: str
    dataset_id: str           # the tuner's dataset id (before per-combination hashing)
    space: dict               # key -> list of values
    model: dict               # Base + base expid section, paths as configured
    dataset: dict             # the dataset section, paths as configured
    dataset_keys: list = field(default_factory=list)  # tuned keys that belong to the dataset
    expid_prefix: str = ""

    @property
    def name(self):
        return os.path.splitext(os.path.basename(self.path))[0]

    @property
    def project_root(self):
        """Relative paths in base_config (and in this yaml's values) resolve against this."""
        return os.path.dirname(self.base_config)

    @property
    def config_dir(self):
        """Where the expanded configs go: FuxiCTR's ``<yaml dir>/<yaml name>/``."""
        return os.path.join(os.path.dirname(self.path), self.name)


def _short_hash(obj):
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.md5(text.encode("utf-8")).hexdigest()[:8]


def load_tuner_config(path):
    """Read and check a tuner yaml; raises UserError naming the yaml and the offending key."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise UserError(f"--config: tuner yaml not found: {path}")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
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

    yaml_dir = os.path.dirname(path)
    base_config = os.path.normpath(os.path.join(yaml_dir, str(raw.get("base_config", "."))))
    if not os.path.isdir(base_config):
        raise UserError(f"{path}: base_config folder not found: {base_config}")
    models = read_sections(base_config, "model_config")
    if not models and not raw.get("model_config"):
        raise UserError(f"{path}: base_config folder {base_config} has no model_config.yaml "
                        f"(base_config is relative to the tuner yaml, e.g. base_config: ../)")
    models.update(_inline(raw, "model_config", path))
    base_expid = str(raw["base_expid"])
    if base_expid not in models or base_expid == "Base":
        raise UserError(f"{path}: base_expid {base_expid!r} is not in {base_config}/model_config.yaml"
                        f"{suggest(base_expid, models)}")
    model = copy.deepcopy(models.get("Base") or {})
    model.update(copy.deepcopy(models[base_expid] or {}))
    model.pop("model_id", None)

    dataset_id = raw.get("dataset_id") or model.get("dataset_id")
    if dataset_id in (None, "TBD"):
        raise UserError(f"{path}: dataset_id is not set (base expid {base_expid} has dataset_id: "
                        f"{model.get('dataset_id', 'missing')}); add dataset_id to the tuner yaml")
    dataset_id = str(dataset_id)
    datasets = read_sections(base_config, "dataset_config")
    datasets.update(_inline(raw, "dataset_config", path))
    if dataset_id not in datasets:
        raise UserError(f"{path}: dataset_id {dataset_id!r} is not in {base_config}/dataset_config.yaml"
                        f"{suggest(dataset_id, datasets)}")
    dataset = copy.deepcopy(datasets[dataset_id] or {})
    # FuxiCTR renames a template expid (dataset_id: TBD) to <model>_<dataset_id>
    prefix = base_expid if model.get("dataset_id") not in (None, "TBD") else f"{model.get('model')}_{dataset_id}"
    model["dataset_id"] = dataset_id

    cfg = TunerConfig(path=path, base_config=base_config, base_expid=base_expid,
                      dataset_id=dataset_id, space={}, model=model, dataset=dataset,
                      expid_prefix=prefix)
    _check_space(cfg, space)
    return cfg


def _inline(raw, key, path):
    sections = raw.get(key) or {}
    if not isinstance(sections, dict):
        raise UserError(f"{path}: {key} must be a mapping of ids to settings")
    return copy.deepcopy(sections)


def _check_space(cfg, space):
    from .registry import get_model
    model_class = get_model(cfg.model.get("model"))
    model_valid = set(cfg.model) | RUNNER_KEYS | init_keywords(model_class)
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
        if isinstance(base, list) and not all(isinstance(v, list) for v in values):
            raise UserError(f"{cfg.path}: tuner_space.{key} takes lists ({key}: {json.dumps(base)} in the base "
                            f"config), so give a list of them, e.g. {key}: [{json.dumps(base)}]")
        if key in dataset_valid:
            cfg.dataset_keys.append(key)
        elif key not in model_valid:
            raise UserError(f"{cfg.path}: unknown key {key!r} in tuner_space"
                            f"{suggest(key, model_valid | dataset_valid)} (model {cfg.model.get('model')} "
                            f"and dataset {cfg.dataset_id} do not read it)")
        cfg.space[key] = values
    if cfg.dataset_keys and cfg.dataset.get("data_format", "csv") != "csv":
        raise UserError(f"{cfg.path}: tuner_space.{cfg.dataset_keys[0]} is a dataset key, but "
                        f"{cfg.dataset_id} has data_format {cfg.dataset.get('data_format')!r}: only CSV "
                        f"datasets can be rebuilt per trial")


def enumerate_trials(cfg):
    """All grid points, in ``tuner_space`` order (last key fastest); returns (trials, datasets).

    ``datasets`` maps each dataset id the trials use to its section (paths as configured).
    """
    keys = list(cfg.space)
    trials, datasets = [], {}
    for index, values in enumerate(itertools.product(*(cfg.space[k] for k in keys)), start=1):
        tuned = dict(zip(keys, values))
        dataset = copy.deepcopy(cfg.dataset)
        dataset.update({k: copy.deepcopy(v) for k, v in tuned.items() if k in cfg.dataset_keys})
        # one data folder per distinct dataset config; untuned datasets keep their id (and data)
        dataset_id = f"{cfg.dataset_id}_{_short_hash(dataset)}" if cfg.dataset_keys else cfg.dataset_id
        datasets.setdefault(dataset_id, dataset)
        section = copy.deepcopy(cfg.model)
        section.update({k: copy.deepcopy(v) for k, v in tuned.items() if k not in cfg.dataset_keys})
        section["dataset_id"] = dataset_id
        section.setdefault("model_root", "checkpoints/")  # the runner's default, kept at the project root
        expid = f"{cfg.expid_prefix}_{index:03d}_{_short_hash(section)}"
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
    target = os.path.dirname(out)  # the project convention resolves paths against this
    header = f"# Expanded from {os.path.basename(cfg.path)} by run_param_tuner.py; regenerated on each run.\n"
    write_yaml_atomic(os.path.join(out, "dataset_config.yaml"),
                      {k: rebase_paths(v, cfg.project_root, target) for k, v in datasets.items()}, header)
    write_yaml_atomic(os.path.join(out, "model_config.yaml"),
                      {t.expid: rebase_paths(t.section, cfg.project_root, target) for t in trials}, header)
    return out


def resolved(section, cfg, key):
    """The absolute path of ``section[key]`` as a run resolves it (``None`` if unset)."""
    value = section.get(key)
    if not value:
        return None
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(cfg.project_root, value))

