"""``run_expid.py``: train and evaluate one expid, FuxiCTR 2.0 / BARS style.

Flow: load ``Base`` + expid + dataset config -> check keys -> build H5 from CSV (once)
-> load the ``FeatureMap`` -> train with ``H5DataLoader`` and early stopping -> evaluate
valid and test -> append the BARS result line to ``<config dir name>.csv`` in the
working directory. Logs and checkpoints go to ``<model_root>/<dataset_id>/<expid>.{log,model}``.
Under ``torchrun`` (several ``--gpu`` ids, or ``-1`` for CPU processes) the run is data-parallel:
:mod:`interformer_fuxi.distributed` says who reads, computes and writes what.
"""
import argparse
import gc
import logging
import os
import sys
from datetime import datetime

import torch

from . import distributed
from .cpu_heap import keep_freed_memory
from .errors import UserError, report

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train and evaluate a FuxiCTR expid.")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="config directory holding model_config.yaml and dataset_config.yaml "
                             "(default: the project's config/)")
    parser.add_argument("--expid", required=True, help="experiment id in model_config.yaml")
    parser.add_argument("--gpu", type=int, nargs="+", default=[-1],
                        help="GPU index, -1 for CPU; under torchrun one id per process of the node "
                             "(torchrun --nproc_per_node 4 run_expid.py ... --gpu 0 1 2 3)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over, ignoring the resumable state a killed run of this expid left")
    parser.add_argument("--model_zoo", default=None,
                        help="a FuxiCTR 2.0.x checkout's model_zoo/ folder: run its models (found in "
                             "<Model>/src, <Folder>/model or <Model>/<Model>_torch/src) under these configs "
                             "(overrides the config key)")
    args = parser.parse_args(argv)
    if args.model_zoo:
        args.model_zoo = os.path.abspath(args.model_zoo)
    return args


def result_line(command, params, valid_result, test_result):
    fmt = lambda logs: " - ".join(f"{k}: {v:.6f}" for k, v in logs.items())
    return (f" {datetime.now().strftime('%Y%m%d-%H%M%S')},[command] {command},[exp_id] {params['model_id']},"
            f"[dataset_id] {params['dataset_id']},[train] N.A.,[val] {fmt(valid_result)},[test] {fmt(test_result)}\n")


def state_file(params):
    """Where a run of ``params`` keeps its resumable state (beside FuxiCTR's checkpoint)."""
    from .training_state import state_path
    return state_path(os.path.join(params.get("model_root", "./checkpoints/"), params["dataset_id"],
                                   params["model_id"] + ".model"))


def start_log(params, append=False):
    """FuxiCTR's log (``<model_root>/<dataset_id>/<expid>.log`` and the console); a resumed run
    appends to the log of the run it continues."""
    log_dir = os.path.join(params.get("model_root", "./checkpoints/"), params["dataset_id"])
    log_file = os.path.join(log_dir, params["model_id"] + ".log")
    try:
        os.makedirs(log_dir, exist_ok=True)
        handler = logging.FileHandler(log_file, mode="a" if append else "w")
    except OSError as exc:
        raise UserError(f"{log_file}: cannot write the log ({exc.strerror or exc})") from None
    for old in logging.root.handlers[:]:
        logging.root.removeHandler(old)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s P%(process)d %(levelname)s %(message)s",
                        handlers=[handler, logging.StreamHandler()])


def quiet_log():
    """A rank other than 0 under DDP: no log file, warnings on the console only, marked with the rank."""
    for old in logging.root.handlers[:]:
        logging.root.removeHandler(old)
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(asctime)s rank {distributed.rank()} %(levelname)s %(message)s")


def prepare(config_dir, expid, gpu=-1, overrides=None, log=True, resume=True):
    """Load and check an expid, build its H5 data once, load its feature map.

    Returns ``(params, feature_map, model_class)``; with ``log`` the run's log file starts
    (appended to when ``resume`` and a resumable state of the run exists).
    """
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.torch_utils import seed_everything
    from fuxictr.utils import print_to_json

    from .config import load_expid
    from .config_keys import check_keys
    from .data import build_h5, check_csv_columns, check_data_files, is_built
    from .external_zoo import source_file
    from .registry import get_model

    overrides = dict(overrides or {})
    # an overridden dataset_id selects the dataset section that is merged, not just the name
    params = load_expid(config_dir, expid, dataset_id=overrides.pop("dataset_id", None),
                        model_zoo=overrides.pop("model_zoo", None))
    params.update(overrides)
    params["_model_keys"] = sorted(set(params["_model_keys"]) | set(overrides))
    model_class = get_model(params.get("model"), params.get("model_zoo"))
    warnings = check_keys(params, model_class)
    csv_input = params.get("data_format", "csv") == "csv"
    if csv_input and not is_built(params):
        check_data_files(params)  # fail fast, before the log starts and the build runs
        check_csv_columns(params)
    params["gpu"] = gpu
    params.setdefault("verbose", 1)
    if not distributed.is_main():
        params["verbose"] = 0  # one progress bar, rank 0's
        if log:
            quiet_log()
        log = False
    if log:
        start_log(params, append=resume and os.path.exists(state_file(params)))
        logging.info("Model: %s from %s", model_class.__name__, source_file(model_class))
        for line in params["_alias_notes"]:
            logging.info(line)
        for line in warnings:
            logging.warning(line)
        logging.info("Params: " + print_to_json({k: v for k, v in params.items() if not k.startswith("_")}))
    if gpu >= 0 and not torch.cuda.is_available():
        logging.warning("--gpu %d requested but CUDA is not available: running on CPU", gpu)
    seed_everything(seed=params.get("seed", 2019))

    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    if csv_input:
        params["_train_csv"], params["_test_csv"] = params.get("train_data"), params.get("test_data")
        if not distributed.is_main():
            distributed.barrier()  # rank 0 builds; the others then reuse its build
        splits = build_h5(params)
        if distributed.is_main():
            distributed.barrier()
        params["train_data"], params["valid_data"], params["test_data"] = splits
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    logging.info("Feature specs: " + print_to_json(feature_map.features))
    return params, feature_map, model_class


def build_model(params, feature_map, model_class):
    try:
        return model_class(feature_map, **{k: v for k, v in params.items() if not k.startswith("_")})
    except ValueError as exc:  # a setting the model rejects, e.g. interleave_mode: both
        raise UserError(f"{params['model_id']}: {exc}") from None
    except TypeError as exc:  # a value of the wrong type, e.g. embedding_dim: "64"
        raise UserError(f"{params['model_id']}: a model key has a value of the wrong type "
                        f"({(str(exc).splitlines() or ['?'])[0][:200]})") from None


def pinned(model, *loaders):
    """On CUDA, page-locked batches so the model's non-blocking copies overlap with compute."""
    for loader in loaders:
        if loader is not None and model.device.type == "cuda":
            loader.pin_memory = True
    return loaders


def load_split(feature_map, params, stage):
    """FuxiCTR's loaders, with one clear line for a truncated or corrupt H5: ``H5DataLoader``
    (a split in memory), or ``H5BlockDataLoader`` for block data (``<split>/*.h5``, built with
    ``data_block_size``: one block in memory at a time)."""
    from fuxictr.pytorch.dataloaders import H5BlockDataLoader, H5DataLoader

    key = "train_data" if stage == "train" else "test_data"
    loader = H5BlockDataLoader if "*" in str(params.get(key) or "") else H5DataLoader
    try:
        return loader(feature_map, stage=stage, **params).make_iterator()
    except (OSError, KeyError, ValueError, AssertionError) as exc:  # the block loader asserts on no files
        data_dir = os.path.join(params["data_root"], params["dataset_id"])
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{data_dir}: unreadable {stage} H5 data ({reason}); delete the folder to rebuild "
                        "it from the CSVs") from None


def run_expid(config_dir, expid, gpu=-1, overrides=None, resume=True):
    """Train and evaluate ``expid``; ``overrides`` replace config values (checked like them);
    ``overrides={"dataset_id": ...}`` runs the expid (or a ``dataset_id: TBD`` template) on
    that dataset, with that dataset's section.

    Returns ``(params, model, valid_result, test_result)``.
    """
    params, feature_map, model_class = prepare(config_dir, expid, gpu, overrides, resume=resume)
    if gpu < 0 or not torch.cuda.is_available():
        # CPU training reuses freed activations instead of fresh mmaps. Training only: under it
        # scoring keeps every batch's peak (DIN's exported graphs more than double theirs at
        # batch 1024; docs/performance.md, "Inference"), so scoring and export keep glibc's defaults.
        keep_freed_memory()
    model = build_model(params, feature_map, model_class)
    model.count_parameters()
    if distributed.active() and not hasattr(model, "_attach_ddp"):
        raise UserError(f"{params['model_id']}: distributed training runs this package's models; "
                        f"{type(model).__name__} comes from FuxiCTR's model_zoo (run it with one process)")
    train_gen, valid_gen = pinned(model, *load_split(feature_map, params, "train"))
    if distributed.active():
        train_gen, valid_gen = distributed.shard_loaders(train_gen, valid_gen, seed=params.get("seed", 2019))
    # (a FuxiCTR zoo model's fit takes **kwargs: it trains from the start, as FuxiCTR does)
    model.fit(train_gen, validation_data=valid_gen, resume=resume, **params)

    logging.info("****** Validation evaluation ******")
    valid_result = model.evaluate(valid_gen)
    del train_gen, valid_gen
    gc.collect()
    test_result = {}
    if params.get("test_data"):
        logging.info("******** Test evaluation ********")
        test_gen, = pinned(model, load_split(feature_map, params, "test"))
        if distributed.active():
            _, test_gen = distributed.shard_loaders(None, test_gen)
        test_result = model.evaluate(test_gen)
        if params.get("oracle_data") and params.get("_test_csv") and distributed.is_main():
            from .oracle import log_oracle
            log_oracle(params, test_result)  # known click probability: the achievable metrics
    return params, model, valid_result, test_result


def load_trained(config_dir, expid, gpu=-1, overrides=None):
    """The model of a finished run of ``expid``, with its best checkpoint loaded."""
    params, feature_map, model_class = prepare(config_dir, expid, gpu, overrides, log=False)
    model = build_model(params, feature_map, model_class)
    if not os.path.isfile(model.checkpoint):
        raise UserError(f"{expid}: no checkpoint at {model.checkpoint}; train it first "
                        f"(python run_expid.py --expid {expid})")
    model.load_weights(model.checkpoint)
    return params, feature_map, model


def run(args, command):
    overrides = {"model_zoo": args.model_zoo} if getattr(args, "model_zoo", None) else None
    params, _, valid_result, test_result = run_expid(args.config, args.expid, args.gpu, overrides,
                                                     resume=not getattr(args, "fresh", False))
    if not distributed.is_main():
        return valid_result, test_result
    result_file = os.path.basename(os.path.normpath(args.config)) + ".csv"
    line = result_line(command, params, valid_result, test_result)
    try:
        with open(result_file, "a+") as f:  # one short append: a line, or nothing on a full disk
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise UserError(f"{os.path.abspath(result_file)}: cannot append the result line "
                        f"({exc.strerror or exc}); it was: {line.strip()}") from None
    logging.info("Appended the result line to %s", os.path.abspath(result_file))
    return valid_result, test_result


def main(argv=None):
    args = parse_args(argv)
    command = "python " + " ".join(sys.argv if argv is None else ["run_expid.py"] + list(argv))
    try:
        args.gpu = distributed.device_of(args.gpu)
        distributed.init(args.gpu)
        if distributed.active():
            command = (f"torchrun --nnodes {os.environ.get('GROUP_WORLD_SIZE', 1)} --nproc_per_node "
                       f"{os.environ.get('LOCAL_WORLD_SIZE', 1)} " + command.split(" ", 1)[1])
        run(args, command)
        distributed.barrier()  # no rank tears the group down while another still talks to it
    except UserError as exc:
        return report(exc if not distributed.launched() else UserError(f"rank {os.environ['RANK']}: {exc}"))
    finally:
        distributed.close()
    return 0
