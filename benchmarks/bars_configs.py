"""Run BARS's published configs, unmodified, with FuxiCTR v2.0.4's model_zoo, on stand-in data.

    python benchmarks/bars_configs.py BARS_DIR FUXICTR_DIR [--jobs 2] [--only DIN BST] [--keys]

``BARS_DIR`` is a checkout of https://github.com/reczoo/BARS, ``FUXICTR_DIR`` one of
https://github.com/reczoo/FuxiCTR at tag v2.0.4. Neither is part of this project.

1. **Published folders.** Every ``ranking/ctr/<Model>/<Model>_<dataset>/`` of the three
   sequence datasets (AmazonElectronics_x1, TaobaoAd_x1, KuaiVideo_x1; 51 folders) is run
   as BARS's README says, from a working directory whose ``../data/`` holds small stand-in
   CSVs in each dataset's exact schema (and KuaiVideo's 64-d visual embedding table)::

       python run_expid.py --config <published config folder> --expid <its expid> --gpu -1 \\
           --model_zoo FUXICTR_DIR/model_zoo

   Nothing in the folder is edited: BARS's relative data paths (``../data/Amazon/...``) are
   resolved against the working directory. A folder passes when the run exits 0 with test
   metrics in its result line.
2. **Tuner yamls.** Each folder's ``*_tuner_config_NN.yaml`` is expanded by FuxiCTR's own
   ``autotuner.enumerate_params`` (from FuxiCTR's ``benchmark/`` folder, as FuxiCTR runs it)
   and by this project's tuner; the trials, expids and dataset ids must be the same. Then the
   DIN, DIEN and BST yamls run their first trial: ``run_param_tuner.py --config <yaml> --tag 1
   --gpu -1 --model_zoo FUXICTR_DIR/model_zoo``.

Prints one line per check and a ``RESULT`` line with the pass counts; exits 1 if any failed.
``--keys`` instead lists every config key that FuxiCTR v2.0.0-v2.0.4's configs and BARS's
``ranking/ctr`` configs use, with how this project treats it (``interformer_fuxi/config_keys.py``).
"""
import argparse
import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "data"))

DATASETS = ("amazonelectronics_x1", "taobaoad_x1", "kuaivideo_x1")
# folder-name suffix -> dataset (BARS names one PPNet folder "PPNet_taobao_x1")
SUFFIXES = {"_amazonelectronics_x1": "amazonelectronics_x1", "_taobaoad_x1": "taobaoad_x1",
            "_taobao_x1": "taobaoad_x1", "_kuaivideo_x1": "kuaivideo_x1"}
TUNER_RUNS = ("DIN", "DIEN", "BST")  # the models whose tuner yamls also run a trial
TIMEOUT = 1800


def published_folders(bars_dir):
    """``(folder, dataset)`` of every published result folder of the three sequence datasets."""
    found = []
    for folder in sorted(glob.glob(os.path.join(bars_dir, "ranking", "ctr", "*", "*"))):
        name = os.path.basename(folder)
        dataset = next((d for s, d in SUFFIXES.items() if name.endswith(s)), None)
        if dataset and os.path.isdir(folder):
            found.append((folder, dataset))
    return found


def run_command(folder):
    """``(config folder, expid, note)`` of the run command in the folder's README. In 9 of the
    51 folders BARS's README names an expid that the published config folder does not hold
    (one is misspelt "DeDeepFM_..."): then the folder's first expid runs, and ``note`` says so."""
    readme = open(os.path.join(folder, "README.md"), errors="replace").read()
    match = re.search(r"run_expid\.py --config (\S+) --expid (\S+)", readme)
    if not match:
        raise ValueError(f"{folder}/README.md has no run_expid.py command")
    from interformer_fuxi.config import list_expids
    expid = match.group(2)
    configs = sorted((os.path.dirname(p) for p in glob.glob(os.path.join(folder, "**", "model_config.yaml"),
                                                              recursive=True)), key=len)
    if not configs:
        raise ValueError(f"no model_config.yaml under {folder}")
    for config in configs:
        if expid in list_expids(config):
            return config, expid, ""
    first = list_expids(configs[0])[0]
    return configs[0], first, f" [README's expid {expid} is not in the published folder: ran {first}]"


# ---------------------------------------------------------------------------- stand-in data

def write_standins(data_dir, seed=2024):
    """Small CSVs in the three BARS schemas where BARS's configs look for them, relative to a
    working directory beside ``data_dir``: ``../data/<Amazon|Taobao|KuaiShou>/...``."""
    import make_tiny_amazon
    import make_tiny_bars

    def write(df, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        df.to_csv(path, index=False)

    amazon = make_tiny_amazon.generate(seed)
    cols = ["label", "user_id", "item_id", "cate_id", "item_history", "cate_history"]
    for split, users in (("train", 60), ("test", 60)):  # BARS's valid_data is its test.csv
        df = amazon[split]
        write(df[df.user_id <= users][cols], os.path.join(data_dir, "Amazon", "AmazonElectronics_x1", f"{split}.csv"))
    df, _ = make_tiny_bars.taobao_rows(num_users=80, rows_per_user=10, seed=seed)
    write(df.iloc[:600], os.path.join(data_dir, "Taobao", "TaobaoAd_x1", "train.csv"))
    write(df.iloc[600:], os.path.join(data_dir, "Taobao", "TaobaoAd_x1", "test.csv"))
    df, visual, _ = make_tiny_bars.kuaivideo_rows(num_users=60, num_items=300, rows_per_user=12, dim=64, seed=seed)
    cut = int(len(df) * 0.8)  # BARS's KuaiVideo files are in time order
    kuai = os.path.join(data_dir, "KuaiShou", "KuaiVideo_x1")
    write(df.iloc[:cut], os.path.join(kuai, "train.csv"))
    write(df.iloc[cut:], os.path.join(kuai, "test.csv"))
    make_tiny_bars.write_visual_h5(os.path.join(kuai, "item_visual_emb_dim64.h5"), visual)


# ---------------------------------------------------------------------------- checks

def run(cmd, cwd):
    start = time.time()
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                             env=dict(os.environ, PYTHONWARNINGS="ignore"))
        return out.returncode, out.stdout + out.stderr, time.time() - start
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {TIMEOUT} s", time.time() - start


def last_error(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:") or "Error" in l]
    return (errors or lines or ["(no output)"])[-1][:300]


def check_folder(folder, dataset, zoo, work):
    """Run one published folder; returns (ok, seconds, message)."""
    config, expid, note = run_command(folder)
    rc, text, secs = run([sys.executable, os.path.join(REPO, "run_expid.py"), "--config", config,
                          "--expid", expid, "--gpu", "-1", "--model_zoo", zoo], work)
    result = os.path.join(work, os.path.basename(config) + ".csv")
    line = next((l for l in open(result) if f"[exp_id] {expid}," in l), "") if os.path.isfile(result) else ""
    test = line.split("[test] ")[-1].strip() if "[test] " in line else ""
    if rc == 0 and test:
        return True, secs, f"test {test}{note}"
    return False, secs, f"exit {rc}: {last_error(text)}{note}"


def fuxictr_expansion(yaml_path, fuxictr_dir):
    """``[(expid, dataset_id)]`` as FuxiCTR's enumerate_params writes them, or an error text."""
    code = ("import os, sys, yaml; from fuxictr import autotuner; "
            "d = autotuner.enumerate_params(sys.argv[1]); "
            "m = yaml.load(open(os.path.join(d, 'model_config.yaml')), Loader=yaml.FullLoader); "
            "print('\\n'.join(f'{k} {v[\"dataset_id\"]}' for k, v in m.items()))")
    out = subprocess.run([sys.executable, "-c", code, yaml_path], cwd=os.path.join(fuxictr_dir, "benchmark"),
                         capture_output=True, text=True)
    if out.returncode:
        return last_error(out.stderr)
    return sorted(tuple(l.split()) for l in out.stdout.splitlines() if l.count(" ") == 1 and "_" in l)


def check_tuner(yaml_path, fuxictr_dir, zoo, work, run_trial):
    """Compare the expansions; with ``run_trial`` also run trial 1. Returns (ok, message)."""
    from interformer_fuxi.errors import UserError
    from interformer_fuxi.tuner_config import enumerate_trials, load_tuner_config
    copy = os.path.join(work, os.path.basename(yaml_path))  # expansions are written beside the yaml
    shutil.copyfile(yaml_path, copy)
    try:
        cfg = load_tuner_config(copy, model_zoo=zoo)
        trials = enumerate_trials(cfg)[0]
    except UserError as exc:
        return False, f"error here: {exc}"
    ours = sorted((t.expid, t.dataset_id) for t in trials)
    note = ""
    theirs = fuxictr_expansion(copy, fuxictr_dir)
    if isinstance(theirs, str):
        # FuxiCTR v2.0.4 cannot find the base config BARS names (moved to <Folder>_torch/):
        # compare with FuxiCTR given the folder found here
        with open(yaml_path) as f:
            text = f.read()
        with open(copy, "w") as f:
            f.write(re.sub(r"^base_config:.*$", f"base_config: {cfg.base_config}", text, flags=re.M))
        note = f" (FuxiCTR itself stops: {theirs}; compared with base_config: {cfg.base_config})"
        theirs = fuxictr_expansion(copy, fuxictr_dir)
        shutil.copyfile(yaml_path, copy)
    shutil.rmtree(os.path.splitext(copy)[0], ignore_errors=True)
    if isinstance(theirs, str):  # FuxiCTR refuses the yaml (e.g. a key its base config lacks)
        message = f"{len(ours)} trials here; FuxiCTR 2.0.4 refuses the yaml ({theirs}), so not compared"
    elif ours != theirs:
        return False, f"expansions differ: {len(ours)} trials here, {len(theirs)} in FuxiCTR, " \
                      f"first difference {next((a, b) for a, b in zip(ours + [None], theirs + [None]) if a != b)}"
    else:
        message = f"{len(ours)} trials, same expids and dataset ids as FuxiCTR (e.g. {trials[0].expid}){note}"
    if not run_trial:
        return True, message
    rc, text, secs = run([sys.executable, os.path.join(REPO, "run_param_tuner.py"), "--config", copy,
                          "--tag", "1", "--gpu", "-1", "--model_zoo", zoo], work)
    done = f"done   {trials[0].expid}" in text
    if rc == 0 and done:
        return True, message + f"; --tag 1 trained {trials[0].expid} ({secs:.0f} s)"
    return False, message + f"; --tag 1 exit {rc}: {last_error(text)}"


# ---------------------------------------------------------------------------- keys

def list_keys(bars_dir, fuxictr_dir):
    """Every key of FuxiCTR 2.0.x's and BARS's configs, and how this project treats it."""
    from collections import Counter

    from interformer_fuxi.config import load_yaml
    from interformer_fuxi.config_keys import ALIASES, DATASET_KEYS, FUXICTR_MODEL_KEYS, IGNORED_KEYS, RUNNER_KEYS
    model_keys, dataset_keys = Counter(), Counter()
    for tag in ("v2.0.0", "v2.0.1", "v2.0.2", "v2.0.3", "v2.0.4"):
        files = subprocess.run(["git", "-C", fuxictr_dir, "ls-tree", "-r", "--name-only", tag],
                               capture_output=True, text=True).stdout.split()
        for name in files:
            if name.endswith("model_config.yaml") or name.endswith("dataset_config.yaml"):
                text = subprocess.run(["git", "-C", fuxictr_dir, "show", f"{tag}:{name}"],
                                      capture_output=True, text=True).stdout
                try:
                    data = load_yaml(text) or {}
                except Exception:
                    continue
                target = model_keys if "model_config" in name else dataset_keys
                for section in data.values():
                    if isinstance(section, dict):
                        target.update(section.keys())
    for path in glob.glob(os.path.join(bars_dir, "ranking", "ctr", "**", "*.yaml"), recursive=True):
        try:
            data = load_yaml(open(path, errors="replace")) or {}
        except Exception:
            continue
        target = dataset_keys if os.path.basename(path) == "dataset_config.yaml" else model_keys
        for section in data.values() if os.path.basename(path).endswith("_config.yaml") else [data.get("tuner_space")]:
            if isinstance(section, dict):
                target.update(section.keys())
    for key, count in sorted((model_keys + dataset_keys).items()):
        if key in RUNNER_KEYS or key in DATASET_KEYS:
            how = "read"
        elif key in ALIASES:
            how = f"read as {ALIASES[key]}"
        elif key in IGNORED_KEYS:
            how = f"warning: {IGNORED_KEYS[key]}"
        elif key in FUXICTR_MODEL_KEYS:
            how = "model key: read where the model's constructor takes it, else a warning"
        else:
            how = "MISSING from interformer_fuxi/config_keys.py: an error unless the model reads it"
        print(f"{key:32s} {count:6d}  {how}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bars_dir")
    parser.add_argument("fuxictr_dir")
    parser.add_argument("--jobs", type=int, default=1, help="folders run at once")
    parser.add_argument("--only", nargs="+", default=None, help="model folder names to check (default: all)")
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--keys", action="store_true", help="list the config keys instead")
    args = parser.parse_args()
    bars, fuxictr = os.path.abspath(args.bars_dir), os.path.abspath(args.fuxictr_dir)
    zoo = os.path.join(fuxictr, "model_zoo")
    if args.keys:
        return list_keys(bars, fuxictr)
    folders = [(f, d) for f, d in published_folders(bars)
               if not args.only or os.path.basename(os.path.dirname(f)) in args.only]
    root = os.path.abspath(args.work) if args.work else tempfile.mkdtemp(prefix="bars_configs_")
    work = os.path.join(root, "run")  # BARS's ../data/ paths resolve from here
    os.makedirs(work, exist_ok=True)
    write_standins(os.path.join(root, "data"))
    print(f"{len(folders)} published folders; stand-in data in {root}/data; runs in {work}", flush=True)

    passed, start = 0, time.time()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(check_folder, f, d, zoo, work): f for f, d in folders}
        for future in concurrent.futures.as_completed(futures):
            folder = os.path.relpath(futures[future], bars)
            try:
                ok, secs, message = future.result()
            except ValueError as exc:
                ok, secs, message = False, 0.0, str(exc)
            passed += ok
            print(f"{'PASS' if ok else 'FAIL'} {folder} ({secs:.0f} s): {message}", flush=True)

    tuner_passed = tuners = 0
    for folder, _ in folders:
        for yaml_path in sorted(glob.glob(os.path.join(folder, "*_tuner_config_*.yaml"))):
            model = os.path.basename(os.path.dirname(folder))
            ok, message = check_tuner(yaml_path, fuxictr, zoo, work, run_trial=model in TUNER_RUNS)
            tuners += 1
            tuner_passed += ok
            print(f"{'PASS' if ok else 'FAIL'} tuner {os.path.relpath(yaml_path, bars)}: {message}", flush=True)
    print(f"RESULT folders_passed={passed}/{len(folders)} tuner_yamls_passed={tuner_passed}/{tuners} "
          f"minutes={(time.time() - start) / 60:.1f}", flush=True)
    if not args.work:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if passed == len(folders) and tuner_passed == tuners else 1


if __name__ == "__main__":
    sys.exit(main())
