"""CSV -> H5, checked and atomic: streamed in chunks (:mod:`interformer_fuxi.stream_build`,
the default) or with FuxiCTR 2.0's ``FeatureProcessor``/``build_dataset`` (``build: fuxictr``).

Before the (possibly long) build, every configured data file must exist, every CSV must
hold every configured column, and ``validate.validate_dataset`` checks every row. The build writes into a temporary sibling directory and is
renamed into ``<data_root>/<dataset_id>`` only when complete, so a failed or interrupted
build leaves nothing behind and the next run builds again.
"""
import copy
import glob
import logging
import os
import pickle
import shutil

import pandas as pd
from fuxictr.preprocess import build_dataset

from .columns import feature_columns, label_columns, required_columns  # noqa: F401 (importers)
from .config import path_not_found
from .errors import UserError
from .fuxictr_processor import SourceFirstFeatureProcessor
from .stream_build import CHUNK_ROWS, build_streaming
from .validate import validate_dataset

SPLITS = ("train_data", "valid_data", "test_data")
# Dataset keys read by the validator, the oracle and build_h5, not by FuxiCTR's build.
VALIDATION_KEYS = ("csv_header", "md5", "bad_rows", "oracle_data", "build", "chunk_rows", "build_workers")
BUILDERS = ("streaming", "fuxictr")
# processes tokenizing CSV chunks in the streaming build; past a few, the ordered bookkeeping
# of the main process is the limit, and every worker holds up to two chunks
BUILD_WORKERS = min(4, os.cpu_count() or 1)


def builder(params):
    """``build`` of the dataset config: ``streaming`` (the default: chunked, the same output
    as FuxiCTR's) or ``fuxictr`` (FuxiCTR 2.0.4's in-memory ``build_dataset``). Without the
    key, a config that splits the train file (``valid_size``/``test_size``) uses FuxiCTR's."""
    build = params.get("build")
    if build is None:
        return "fuxictr" if params.get("valid_size") or params.get("test_size") else "streaming"
    if build not in BUILDERS:
        raise UserError(f"{params['dataset_id']}: build must be one of {', '.join(BUILDERS)}, got {build!r}")
    return build


def check_data_files(params):
    if not params.get("train_data"):
        raise UserError(f"{params['dataset_id']}: train_data is not set in dataset_config")
    for key in SPLITS:
        path = params.get(key)
        if path and not os.path.isfile(path):
            raise path_not_found(params, key, path)
    for col in params.get("feature_cols") or []:
        emb = col.get("pretrained_emb") if isinstance(col, dict) else None
        if emb and not os.path.isfile(emb):
            raise path_not_found(params, f"pretrained_emb of {col.get('name')}", emb)


def check_csv_columns(params):
    required = required_columns(params)  # a ``copy_from(x)`` column needs ``x``, not itself
    sep = params.get("sep", ",")
    for key in SPLITS:
        path = params.get(key)
        if not path:
            continue
        try:
            header = list(pd.read_csv(path, sep=sep, nrows=0).columns)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: cannot read the CSV header ({exc})") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise UserError(f"{path}: column {missing[0]!r} configured in {params['dataset_id']} "
                            f"is missing (header: {','.join(header)})")


def built_files(data_dir, params):
    """The files a build leaves: ``feature_map.json`` and ``<split>.h5``, or with
    ``data_block_size`` the FuxiCTR block pattern ``<split>/*.h5`` (what its loaders take)."""
    files = {"feature_map.json": os.path.join(data_dir, "feature_map.json")}
    blocks = int(params.get("data_block_size") or 0) > 0
    for key in SPLITS:
        if params.get(key):
            split = key.split("_")[0]
            files[split + ".h5"] = os.path.join(data_dir, split, "*.h5") if blocks else \
                os.path.join(data_dir, split + ".h5")
    return files


def is_built(params):
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    return all(glob.glob(f) if "*" in f else os.path.isfile(f) for f in built_files(data_dir, params).values())


def build_h5(params):
    """Build (or reuse) ``<data_root>/<dataset_id>``; return the H5 paths of the splits."""
    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    files = built_files(data_dir, params)
    if is_built(params):
        logging.info("Reusing built data in %s (delete it to rebuild)", data_dir)
    else:
        check_data_files(params)
        check_csv_columns(params)
        if os.path.exists(data_dir):
            logging.warning("Removing incomplete data directory %s", data_dir)
            shutil.rmtree(data_dir)
        _build_atomically(params, data_dir)
    return tuple(files.get(key.split("_")[0] + ".h5") for key in SPLITS)


def _build_atomically(params, data_dir):
    build = builder(params)
    tmp_root = os.path.join(params["data_root"], f".building-{params['dataset_id']}-{os.getpid()}")
    shutil.rmtree(tmp_root, ignore_errors=True)
    build_params = copy.deepcopy({k: v for k, v in params.items()
                                  if not k.startswith("_") and k not in VALIDATION_KEYS})
    build_params["feature_cols"] = feature_columns(params)
    build_params["data_root"] = tmp_root
    try:
        os.makedirs(tmp_root)
        # the validated (in skip mode: cleaned) copies live in tmp_root, removed below
        build_params.update(validate_dataset(params, tmp_root))
        if build == "streaming":
            processor = build_streaming(build_params, build_params, params.get("chunk_rows", CHUNK_ROWS),
                                        params.get("build_workers", BUILD_WORKERS))
        else:
            processor = SourceFirstFeatureProcessor(**build_params)
            build_dataset(processor, **build_params)
        build_dir = processor.data_dir
        _retarget_pickle(processor, build_dir, data_dir)
        try:
            os.rename(build_dir, data_dir)
        except OSError:
            if not is_built(params):  # else a concurrent run finished the same build first
                raise
    except KeyError as exc:
        raise UserError(f"{params['dataset_id']}: a feature column lacks the key {exc} "
                        "(each needs name, dtype and type)") from None
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UserError(f"{params['dataset_id']}: building H5 from CSV failed: "
                        f"{(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    logging.info("Built H5 data in %s", data_dir)


def _retarget_pickle(processor, build_dir, data_dir):
    """Re-pickle the processor so that it names the final directory, not the temporary one."""
    processor.data_dir = processor.feature_map.data_dir = data_dir
    for attr in ("pickle_file", "json_file", "vocab_file"):
        setattr(processor, attr, os.path.join(data_dir, os.path.basename(getattr(processor, attr))))
    with open(os.path.join(build_dir, "feature_processor.pkl"), "wb") as f:
        pickle.dump(processor, f)
