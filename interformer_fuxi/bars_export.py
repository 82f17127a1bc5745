"""A BARS submission folder from a finished grid search.

``python -m interformer_fuxi.bars_export --tuner-config config/tuner/X.yaml [--expid E]``
reads the sweep's results CSV (``<yaml name>.csv`` in the working directory, as
``run_param_tuner.py`` leaves it), takes the trial with the best validation monitor (or
``--expid``) and writes ``<model>_<dataset_id>/`` holding:

* ``README.md`` in BARS's layout: Environments (this machine's hardware and software, fuxictr
  last), Dataset (link to BARS's dataset page), Code (running steps with this repository),
  Results (test metrics; one row per seed with Avg and Std rows when the grid ran the chosen
  point with several seeds), Logs (the chosen run's log);
* ``environments.txt``, the tuner yaml, ``dataset_config.yaml`` and ``model_config.yaml`` with
  the chosen run(s) (paths relative to the folder that holds the export, so ``python
  run_expid.py --config <folder> --expid <expid>`` reruns it unmodified, from any working
  directory), ``results.csv`` with their result lines, and ``<expid>.log``.

The folder is built under a temporary name and renamed into place (replacing an older export).
"""
import argparse
import os
import shutil
import sys

import numpy as np

from .atomic import atomic_dir
from .environment import environment, format_block, git_commit
from .errors import UserError, report
from .results import rank, read_results
from .tuner_config import enumerate_trials, load_tuner_config, rebase_paths, resolved, write_yaml_atomic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = "https://github.com/reczoo/Datasets/tree/main/"
# dataset_id -> (name, page in BARS's dataset collection)
BARS_DATASETS = {
    "amazonelectronics_x1": ("AmazonElectronics_x1", DATASETS + "Amazon/AmazonElectronics_x1"),
    "taobaoad_x1": ("TaobaoAd_x1", DATASETS + "Taobao/TaobaoAd_x1"),
    "kuaivideo_x1": ("KuaiVideo_x1", DATASETS + "KuaiShou/KuaiVideo_x1"),
    # BARS has no x1 split of MovieLens-1M: its MovieLens collection page
    "movielens1m_x1": ("MovieLens-1M", DATASETS + "MovieLens"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Write a BARS submission folder from a grid search.")
    parser.add_argument("--tuner-config", required=True, help="the tuner yaml the sweep ran")
    parser.add_argument("--expid", default=None, help="the trial to submit (default: best validation monitor)")
    parser.add_argument("--results", default=None,
                        help="the sweep's results CSV (default: <yaml name>.csv in the working directory)")
    parser.add_argument("--out-dir", default=".", help="where <model>_<dataset_id>/ goes (default: .)")
    return parser.parse_args(argv)


def choose_runs(cfg, trials, results, expid=None):
    """The chosen trial and its seed siblings (same settings but ``seed``), done ones only."""
    done = [t for t in trials if t.expid in results]
    if not done:
        raise UserError(f"{cfg.path}: no trial of this yaml has a result line yet "
                        f"(run python run_param_tuner.py --config {cfg.path})")
    monitor, mode = done[0].section.get("monitor", "AUC"), done[0].section.get("monitor_mode", "max")
    if expid is None:
        ranked = rank([{"val": results[t.expid]["val"], "trial": t} for t in done], monitor, mode)
        if ranked[0]["monitor"] is None:
            raise UserError(f"{cfg.path}: no result line has the monitor's metrics {monitor}")
        best = ranked[0]["trial"]
    else:
        matches = [t for t in trials if t.expid == expid]
        if not matches:
            raise UserError(f"--expid: {expid!r} is not a trial of {cfg.path} (was the yaml changed "
                            f"since the sweep?); e.g. {trials[0].expid}")
        if expid not in results:
            raise UserError(f"--expid: {expid} has no result line yet (run it first)")
        best = matches[0]
    strip = lambda t: {k: v for k, v in t.section.items() if k != "seed"}
    runs = [t for t in done if strip(t) == strip(best)]
    return best, sorted(runs, key=lambda t: (t is not best, str(t.section.get("seed"))))


def results_table(runs, results):
    """Markdown table of the runs' test metrics (valid ones where a run has no test set)."""
    split = "test" if all(results[t.expid]["test"] for t in runs) else "val"
    names = list(dict.fromkeys(m for t in runs for m in results[t.expid][split]))
    values = np.array([[results[t.expid][split].get(m, np.nan) for m in names] for t in runs])
    fmt = lambda row: " | ".join(f"{v:.6f}" for v in row)
    if len(runs) == 1:
        lines = ["| " + " | ".join(names) + " |", "|" + ":---:|" * len(names), f"| {fmt(values[0])} |"]
    else:
        lines = ["| run | seed | " + " | ".join(names) + " |", "|" + ":---:|" * (len(names) + 2)]
        lines += [f"| {t.expid} | {t.section.get('seed')} | {fmt(v)} |" for t, v in zip(runs, values)]
        lines += [f"| Avg | | {fmt(values.mean(axis=0))} |", f"| Std | | {fmt(values.std(axis=0))} |"]
    return "\n".join(lines), split


def readme(cfg, folder, best, runs, results, datasets, env, log_text, n_done, chosen_by_hand=False):
    """The folder's README, section by section in the layout of BARS's result READMEs."""
    name, link = BARS_DATASETS.get(cfg.dataset_id.lower(), (cfg.dataset_id, None))
    model = best.section.get("model")
    table, split = results_table(runs, results)
    commit = git_commit(REPO) or "unknown (not a git checkout)"
    fuxictr = dict(env["software"]).get("fuxictr")
    dataset = datasets[best.dataset_id]
    data_paths = "\n".join(f"   {k}: {dataset[k]}" for k in ("train_data", "valid_data", "test_data") if dataset.get(k))
    yaml_rel = os.path.relpath(cfg.path, REPO)
    monitor = best.section.get("monitor")
    monitor = " + ".join(monitor) if isinstance(monitor, dict) else monitor
    dataset_text = (f"Please refer to [{name}]({link}) to get the dataset details." if link else
                    f"`{cfg.dataset_id}` is not one of BARS's datasets; see `dataset_config.yaml` for its files.")
    how = f"`{best.expid}`, chosen by hand," if chosen_by_hand else "the best by the validation monitor"
    seeds = (f"The chosen grid point ran with {len(runs)} seeds; Avg and Std (population) are over them.\n\n"
             if len(runs) > 1 else "")
    return f"""## {folder}

A hands-on guide to run the {model} model ([arXiv 2411.09852](https://arxiv.org/abs/2411.09852)) on the
{name} dataset: {how} of the {n_done} finished grid points of `{os.path.basename(cfg.path)}`, run with
interformer-fuxi on FuxiCTR {fuxictr}.

Author: interformer-fuxi


| [Environments](#Environments) | [Dataset](#Dataset) | [Code](#Code) | [Results](#Results) | [Logs](#Logs) |
|:-----------------------------:|:-----------:|:--------:|:--------:|-------|
### Environments
+ Hardware

  ```python
{_indent(format_block(env["hardware"]))}
  ```

+ Software

  ```python
{_indent(format_block(env["software"]))}
  ```

### Dataset
{dataset_text}

### Code

We use the `{model}` class of interformer-fuxi (commit `{commit}`), a FuxiCTR {fuxictr} plugin, for this experiment.

Running steps:

1. Check out the repository at that commit and install it with the versions above:

   ```bash
   pip install -r requirements.txt -e .
   ```

2. Put the dataset's CSV files where `dataset_config.yaml` in this folder points, relative to the
   folder that holds this folder (the repository root, where it was exported):

   ```
{data_paths}
   ```

3. Train and evaluate the chosen configuration, unmodified:

   ```bash
   python run_expid.py --config {folder} --expid {best.expid} --gpu 0
   ```

   or rerun the whole grid search and this export:

   ```bash
   python run_param_tuner.py --config {yaml_rel} --gpu 0 1 2 3
   python -m interformer_fuxi.bars_export --tuner-config {yaml_rel}
   ```

### Results
{seeds}{table}

{split.replace('val', 'Validation').replace('test', 'Test')}-set metrics of `{best.expid}`, {'picked by hand (--expid); the grid ranks by' if chosen_by_hand else 'chosen by its'} validation {monitor}
(`results.csv` holds the full result line{'s' if len(runs) > 1 else ''}).

### Logs
```python
{log_text.rstrip()}
```
"""


def _indent(text, pad="  "):
    return "\n".join(pad + line for line in text.splitlines())


def export(args):
    cfg = load_tuner_config(args.tuner_config)
    trials, datasets = enumerate_trials(cfg)
    results_csv = os.path.abspath(args.results or cfg.name + ".csv")
    if not os.path.isfile(results_csv):
        raise UserError(f"--results: {results_csv} not found (run the sweep from this directory "
                        f"first, or pass --results)")
    results = read_results(results_csv)
    best, runs = choose_runs(cfg, trials, results, args.expid)
    log_path = os.path.join(resolved(best.section, cfg, "model_root"), best.dataset_id, best.expid + ".log")
    if not os.path.isfile(log_path):
        raise UserError(f"{best.expid}: its log {log_path} is missing")
    with open(log_path, errors="replace") as f:
        log_text = f.read()

    folder = f"{best.section.get('model')}_{cfg.dataset_id}"
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    final = os.path.join(out_dir, folder)
    # relative paths rewritten against the folder that holds the export: the first place a
    # run looks (interformer_fuxi.config), so the folder runs unmodified from any directory
    dataset = {best.dataset_id: rebase_paths(datasets[best.dataset_id], cfg.path_base, out_dir)}
    with atomic_dir(final) as tmp:
        env = environment()
        _write(os.path.join(tmp, "README.md"), readme(cfg, folder, best, runs, results, dataset, env, log_text,
                                                      sum(t.expid in results for t in trials), args.expid is not None))
        _write(os.path.join(tmp, "environments.txt"),
               "[Hardware]\n" + format_block(env["hardware"]) + "\n\n[Software]\n" + format_block(env["software"]) + "\n")
        shutil.copyfile(cfg.path, os.path.join(tmp, os.path.basename(cfg.path)))
        write_yaml_atomic(os.path.join(tmp, "dataset_config.yaml"), dataset)
        write_yaml_atomic(os.path.join(tmp, "model_config.yaml"),
                          {t.expid: rebase_paths(t.section, cfg.path_base, out_dir) for t in runs})
        _write(os.path.join(tmp, "results.csv"), "".join(results[t.expid]["line"] + "\n" for t in runs))
        shutil.copyfile(log_path, os.path.join(tmp, best.expid + ".log"))
    print(f"{final}/: {best.expid}" + (f" and {len(runs) - 1} other seed(s)" if len(runs) > 1 else "")
          + f" from {results_csv}")
    return final


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main(argv=None):
    args = parse_args(argv)
    try:
        export(args)
    except UserError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
