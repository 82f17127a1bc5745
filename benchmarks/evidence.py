"""Evidence benchmarks: the paper's comparisons as cached, multi-seed runs of the project's runner.

    python benchmarks/evidence.py --suite table3 --dataset movielens1m_x1 [--seeds 3]
        [--lrs 1e-3 3e-3 1e-2] [--jobs 2] [--tiny] [--report]

A run is (model template, dataset, the dataset's protocol from ``benchmarks/protocol.yaml``,
the suite entry's overrides, learning rate, seed). Stage 1 trains every entry on the first
seed at each learning rate and keeps the rate with the best validation monitor; stage 2
trains that rate on the other seeds. Every finished run is one JSON file,
``<results>/<dataset>/<key>.json`` (key: a hash of the run's resolved parameters, so equal
runs of different suites are shared; a built-in model whose computation changed has a
``revision`` in it), written atomically; a rerun skips them, a failed run
is recorded with its log and does not stop the others. Logs (and, with
``--keep-checkpoints``, checkpoints) go to ``<results>/<dataset>/runs/<key>/``. The tables
(Markdown, CSV) and charts (PNG) go to ``<results>/<dataset>/<suite>[-tiny].*``;
``--report`` only rebuilds them from the cache.
"""
import argparse
import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone

import yaml
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for path in (REPO, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

import evidence_report as report  # noqa: E402
import oracle as oracle_hook  # noqa: E402
from evidence_suites import SUITES  # noqa: E402
from interformer_fuxi.config import PATH_KEYS, load_expid  # noqa: E402
from interformer_fuxi.errors import UserError, report as report_error  # noqa: E402

DEFAULT_PROTOCOL = os.path.join(HERE, "protocol.yaml")
DEFAULT_RESULTS = os.path.join(HERE, "results")
# Keys that do not change what a run computes (where it writes, how much it prints).
VOLATILE_KEYS = set(PATH_KEYS) | {"model_root", "model_id", "verbose", "gpu", "num_workers"}


# ---------------------------------------------------------------- protocol and run specs

def load_protocol(path, dataset):
    """The dataset's protocol: ``defaults`` merged with its section (``params`` merged key-wise)."""
    with open(path) as f:
        table = yaml.safe_load(f) or {}
    if dataset not in table or dataset == "defaults":
        known = ", ".join(k for k in table if k != "defaults")
        raise UserError(f"{path}: no protocol for dataset {dataset!r} (defined: {known}); "
                        f"add a section with its training budget")
    proto = dict(table.get("defaults") or {})
    section = table[dataset] or {}
    proto.update({k: v for k, v in section.items() if k != "params"})
    proto["params"] = dict((table.get("defaults") or {}).get("params") or {}, **(section.get("params") or {}))
    return proto


def template_of(entry, tiny):
    return f"{entry.model}_{'tiny' if tiny else 'default'}"


def run_overrides(protocol, entry, dataset, lr, seed):
    """What a run changes in its template: protocol, then the variant, then lr and seed."""
    return dict(protocol["params"], **entry.overrides, learning_rate=float(lr), seed=int(seed),
                dataset_id=dataset)


@functools.lru_cache(maxsize=None)
def _load(config_dir, template, dataset_id):
    return load_expid(config_dir, template, dataset_id=dataset_id)


def resolve(config_dir, template, overrides):
    """The run's parameters as the runner will see them (config + dataset + overrides)."""
    params = copy.deepcopy(_load(config_dir, template, overrides["dataset_id"]))
    params.update(overrides)
    return params


def jsonable(params):
    return json.loads(json.dumps({k: v for k, v in params.items() if not k.startswith("_")},
                                 sort_keys=True, default=str))


def model_revision(name):
    """A built-in model's ``revision`` (1 unless its computation changed since its first runs)."""
    from interformer_fuxi import models  # noqa: F401  (importing registers them)
    from interformer_fuxi.registry import MODELS
    return getattr(MODELS.get(name) if isinstance(name, str) else None, "revision", 1)


def run_key(params):
    """Hash of what the run computes: equal settings from different suites share one run."""
    content = {k: v for k, v in jsonable(params).items() if k not in VOLATILE_KEYS}
    if content.get("model_zoo"):  # FuxiCTR's model, wherever its checkout lives
        content["model_zoo"] = "FuxiCTR"
    elif (revision := model_revision(content.get("model"))) > 1:  # runs of its earlier code are not reused
        content["_revision"] = revision
    return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def make_spec(ctx, entry, lr, seed, stage):
    template = template_of(entry, ctx.tiny)
    overrides = run_overrides(ctx.protocol, entry, ctx.dataset, lr, seed)
    if entry.fuxictr:  # FuxiCTR's own model: from --model-zoo
        if not ctx.model_zoo:
            raise UserError(f"entry {entry.name!r} runs FuxiCTR's {entry.model}: pass --model-zoo "
                            f"<FuxiCTR v2.0.4 checkout>/model_zoo")
        overrides["model_zoo"] = ctx.model_zoo
    try:
        key = run_key(resolve(ctx.config, template, overrides))
    except UserError:  # e.g. an unknown template: keyed by its settings, it fails when run
        key = run_key(dict(overrides, model_id=None, _template=template, model=template))
    return {"key": key, "config": ctx.config, "template": template, "overrides": overrides,
            "dataset": ctx.dataset, "lr": float(lr), "seed": int(seed), "stage": stage,
            "entry": entry.name, "gpu": ctx.gpu, "threads": ctx.threads,
            "keep_checkpoints": ctx.keep_checkpoints,
            "out": os.path.join(ctx.results_dir, f"{key}.json"),
            "run_dir": os.path.join(ctx.results_dir, "runs", key)}


# ---------------------------------------------------------------- one run

def write_json(path, data):
    """Atomic: a reader sees the old file or the complete new one, never a partial one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


def machine():
    import torch
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _reset_logging():
    for handler in logging.root.handlers[:]:
        handler.close()
        logging.root.removeHandler(handler)


def execute(spec):
    """Train and evaluate one run, write its record to ``spec['out']`` and return it."""
    import torch
    from interformer_fuxi.runner import run_expid

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    os.makedirs(spec["run_dir"], exist_ok=True)
    overrides = dict(spec["overrides"], model_root=spec["run_dir"])
    record = {k: spec[k] for k in ("key", "template", "dataset", "lr", "seed", "stage", "entry", "overrides")}
    record["log"] = os.path.join(spec["run_dir"], spec["dataset"], spec["template"] + ".log")
    record["console"] = os.path.join(spec["run_dir"], "console.txt")
    start = time.time()
    try:
        with open(record["console"], "w") as console, contextlib.redirect_stdout(console), \
                contextlib.redirect_stderr(console):  # FuxiCTR's log stream handler binds to it
            try:
                params, model, valid, test = run_expid(spec["config"], spec["template"], spec["gpu"], overrides)
            except BaseException:
                traceback.print_exc()
                raise
            finally:
                _reset_logging()
        history = model.fit_history
        train_epochs = [e - v for e, v in zip(history["epoch_seconds"], history["eval_seconds"])]
        record.update(
            status="ok", params=jsonable(params), valid=dict(valid), test=dict(test),
            num_params=int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            epoch_seconds=history["epoch_seconds"], eval_seconds=history["eval_seconds"],
            train_seconds_per_epoch=sum(train_epochs) / max(len(train_epochs), 1),
            epochs_trained=len(history["epoch_seconds"]), best_epoch=history["best_epoch"],
            best_monitor=history["best_monitor"])
        if not spec.get("keep_checkpoints") and os.path.isfile(model.checkpoint):
            os.remove(model.checkpoint)
    except Exception as exc:  # recorded; the suite goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    record.update(wall_seconds=time.time() - start, machine=machine(),
                  finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json(spec["out"], record)
    return record


def execute_subprocess(spec):
    """``execute`` in a fresh interpreter with ``threads`` BLAS/OpenMP threads."""
    os.makedirs(spec["run_dir"], exist_ok=True)
    spec_path = os.path.join(spec["run_dir"], "spec.json")
    write_json(spec_path, spec)
    env = dict(os.environ)
    if spec.get("threads"):
        env.update(OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    stderr_path = os.path.join(spec["run_dir"], "worker.txt")
    with open(stderr_path, "w") as err:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", spec_path],
                              stdout=err, stderr=subprocess.STDOUT, env=env)
    record = read_record(spec["out"])
    if record is None:  # the interpreter died before writing its record (a signal, memory)
        record = {k: spec[k] for k in ("key", "template", "dataset", "lr", "seed", "stage", "entry", "overrides")}
        record.update(status="failed", error=f"worker exited with code {proc.returncode} before writing its result",
                      log=stderr_path, finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        write_json(spec["out"], record)
    return record


def read_record(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- suites

class Context:
    """Settings shared by every run of one invocation."""

    def __init__(self, dataset, config, protocol, results_root, tiny=False, jobs=1, threads=None,
                 gpu=-1, keep_checkpoints=False, retry_failed=False, model_zoo=None):
        self.model_zoo = os.path.abspath(model_zoo) if model_zoo else None
        self.dataset, self.config, self.protocol, self.tiny = dataset, os.path.abspath(config), protocol, tiny
        self.results_dir = os.path.join(results_root, dataset)
        self.jobs = jobs
        # in one process the caller's OMP_NUM_THREADS / torch default stands unless set
        self.threads = threads or (max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None)
        self.gpu, self.keep_checkpoints, self.retry_failed = gpu, keep_checkpoints, retry_failed

    def cached(self, spec):
        record = read_record(spec["out"])
        if record is None or (self.retry_failed and record.get("status") != "ok"):
            return None
        return record


def seeds_of(ctx, n):
    return [int(ctx.protocol["seed"]) + i for i in range(n)]


def monitor_value(record):
    """The validation monitor of a finished run (FuxiCTR's definition: a weighted sum)."""
    monitor = record["params"].get("monitor", "AUC")
    weights = {monitor: 1} if isinstance(monitor, str) else monitor
    value = sum(w * record["valid"][m] for m, w in weights.items())
    return value if record["params"].get("monitor_mode", "max") == "max" else -value


def stage1_specs(ctx, suite):
    """Per entry, the lr-search runs its lr comes from (those of its ``lr_of`` entry, if any)."""
    seed = seeds_of(ctx, 1)[0]
    return {e.name: [make_spec(ctx, e.lr_of or e, lr, seed, 1) for lr in lrs_of(ctx, e.lr_of or e)]
            for e in suite.entries}


def lrs_of(ctx, entry):
    """The stage-1 grid of one entry: its own (a model's tuned range) or the protocol's."""
    return entry.lrs or ctx.protocol["lrs"]


def choose_lr(ctx, specs):
    """``(lr, note)`` from the stage-1 runs of one entry; lr None while any is missing or all failed."""
    records = [ctx.cached(s) for s in specs]
    if any(r is None for r in records):
        return None, "stage 1 not finished"
    ok = [(monitor_value(r), -i, s["lr"]) for i, (s, r) in enumerate(zip(specs, records)) if r["status"] == "ok"]
    if not ok:
        return None, "failed at every lr: " + records[0].get("error", "")
    failed = len(records) - len(ok)
    return max(ok)[2], (f"{failed} lr run(s) failed" if failed else "")


def stage2_specs(ctx, suite, entry_name, lr, n_seeds):
    entry = suite.entry(entry_name)
    return [make_spec(ctx, entry, lr, seed, 2) for seed in seeds_of(ctx, n_seeds)]


def run_specs(ctx, specs, desc):
    """Run the specs that have no cached record (deduplicated by key), with a progress bar."""
    todo = list({s["key"]: s for s in specs if ctx.cached(s) is None}.values())
    if not todo:
        return
    if ctx.jobs > 1:
        _build_data_once(ctx, todo[0])
        with ThreadPoolExecutor(ctx.jobs) as pool, tqdm(total=len(todo), desc=desc) as bar:
            for future in as_completed([pool.submit(execute_subprocess, s) for s in todo]):
                _report_progress(bar, future.result())
    else:
        with tqdm(total=len(todo), desc=desc) as bar:
            for spec in todo:
                _report_progress(bar, execute(spec))


def _report_progress(bar, record):
    bar.update(1)
    if record["status"] != "ok":
        tqdm.write(f"failed: {record['entry']} lr={record['lr']} seed={record['seed']}: "
                   f"{record.get('error', '')} (log: {record.get('log')})")


def _build_data_once(ctx, spec):
    """Build the dataset's H5 files before parallel runs, so they do not all build it."""
    from interformer_fuxi.runner import prepare
    try:
        prepare(ctx.config, spec["template"], overrides=spec["overrides"], log=False)
    except UserError:
        pass  # each run records the same error


def plan(ctx, suites, n_seeds_of):
    """Counts of runs per stage: total, cached, to do (stage 2 only where lr is known)."""
    s1 = {s["key"]: s for suite in suites for specs in stage1_specs(ctx, suite).values() for s in specs}
    s2, unknown = {}, 0
    for suite in suites:
        for name, specs in stage1_specs(ctx, suite).items():
            lr, _ = choose_lr(ctx, specs)
            if lr is None:
                unknown += 1
                continue
            for s in stage2_specs(ctx, suite, name, lr, n_seeds_of(suite)):
                s2.setdefault(s["key"], s)
    s2 = {k: v for k, v in s2.items() if k not in s1}
    count = lambda runs: (len(runs), sum(ctx.cached(s) is not None for s in runs.values()))
    return count(s1), count(s2), unknown


def entry_results(ctx, suite, n_seeds):
    results = {}
    for name, specs in stage1_specs(ctx, suite).items():
        lr, note = choose_lr(ctx, specs)
        if lr is None:
            results[name] = {"lr": None, "records": [], "note": note}
            continue
        records = [ctx.cached(s) for s in stage2_specs(ctx, suite, name, lr, n_seeds)]
        missing = sum(r is None for r in records)
        records = [r for r in records if r is not None]
        failed = [r for r in records if r["status"] != "ok"]
        notes = [note] if note else []
        if suite.entry(name).lr_of:
            notes.append(f"lr of {suite.entry(name).lr_of.name}")
        elif suite.entry(name).lrs:
            notes.append(f"its own lr grid {list(suite.entry(name).lrs)}")
        if missing:
            notes.append(f"{missing} seed(s) not run")
        if failed:
            notes.append(f"{len(failed)} seed(s) failed: {failed[0].get('error', '')}")
        results[name] = {"lr": lr, "records": records, "note": "; ".join(notes)}
    return results


def protocol_lines(ctx, n_seeds):
    lines = [f"dataset `{ctx.dataset}`; templates `<Model>_{'tiny' if ctx.tiny else 'default'}` "
             f"of {os.path.relpath(ctx.config, REPO) if ctx.config.startswith(REPO) else ctx.config}",
             "protocol (every model): " + ", ".join(f"{k}={v}" for k, v in sorted(ctx.protocol["params"].items())),
             f"learning rate: best validation monitor of {list(ctx.protocol['lrs'])} on seed "
             f"{ctx.protocol['seed']}, per model (an ablation uses its model's, see the notes); then seeds "
             f"{seeds_of(ctx, n_seeds)} at that rate (test metrics)"]
    try:
        params = load_expid(ctx.config, "InterFormer_tiny" if ctx.tiny else "InterFormer_default",
                            dataset_id=ctx.dataset)
        lens = {c["name"] if isinstance(c["name"], str) else "/".join(c["name"]): c["max_len"]
                for c in params.get("feature_cols", []) if isinstance(c, dict) and "max_len" in c}
        if lens:
            lines.append("sequence max_len (dataset config): " + ", ".join(f"{k}={v}" for k, v in lens.items()))
    except UserError:
        pass
    return lines


def dataset_oracle(ctx):
    try:
        params = load_expid(ctx.config, "InterFormer_tiny" if ctx.tiny else "InterFormer_default",
                            dataset_id=ctx.dataset)
    except UserError:
        return None
    return oracle_hook.oracle_metrics(params, ctx.protocol)


def run_cost(ctx, suite, records):
    """One line: how many runs the suite's table rests on (lr search included) and their time."""
    runs = {s["key"]: ctx.cached(s) for specs in stage1_specs(ctx, suite).values() for s in specs}
    runs.update({r["key"]: r for r in records})
    done = [r for r in runs.values() if r is not None]
    minutes = sum(r.get("wall_seconds", 0) for r in done) / 60
    return f"runs: {len(done)} (lr search included), {minutes:.1f} minutes of run time in all (one process each)"


def write_report(ctx, suite, n_seeds, oracle=None):
    """Write ``<suite>[-tiny].md/.csv/.png`` from the cache; return the Markdown."""
    results = entry_results(ctx, suite, n_seeds)
    rows = report.build_rows(suite, results, oracle)
    records = [r for res in results.values() for r in res["records"]]
    machines = sorted({json.dumps(r["machine"], sort_keys=True) for r in records if r.get("machine")})
    lines = protocol_lines(ctx, n_seeds)
    lines += [f"machine: {', '.join(f'{k}={v}' for k, v in json.loads(m).items())}" for m in machines]
    lines.append(run_cost(ctx, suite, records))
    if suite.paper:
        lines.append(f"paper: {suite.paper}")
    stem = os.path.join(ctx.results_dir, suite.name + ("-tiny" if ctx.tiny else ""))
    os.makedirs(ctx.results_dir, exist_ok=True)
    text = report.markdown(suite, rows, lines, oracle)
    for path, content in ((stem + ".md", text), (stem + ".csv", report.to_csv(rows, oracle))):
        with open(path + ".tmp", "w") as f:
            f.write(content)
        os.replace(path + ".tmp", path)
    if suite.chart_metric:
        report.chart(suite, rows, stem + ".png", f"{suite.title} — {ctx.dataset}", oracle)
    return text


def run_suites(ctx, suites, n_seeds_of, report_only=False, out=print, entries=None):
    """Plan, run both stages (unless ``report_only``), write and return the reports.

    ``entries``: run only these entries (by name; the reports still cover every entry).
    """
    if entries:
        known = {e.name for suite in suites for e in suite.entries}
        missing = [name for name in entries if name not in known]
        if missing:
            raise UserError(f"--entries: no entry {missing[0]!r} in suite(s) "
                            f"{', '.join(s.name for s in suites)} (entries: {', '.join(sorted(known))})")
    chosen = lambda name: not entries or name in entries
    (n1, c1), (n2, c2), unknown = plan(ctx, suites, n_seeds_of)
    out(f"Protocol for {ctx.dataset}:")
    for line in protocol_lines(ctx, max(n_seeds_of(s) for s in suites)):
        out("  " + line)
    out(f"Plan: stage 1 (lr search): {n1} runs, {c1} cached, {n1 - c1} to do; stage 2 (seeds): "
        f"{n2} runs known, {c2} cached, {n2 - c2} to do" + (f", + those of {unknown} entries "
                                                           f"whose lr is not chosen yet" if unknown else ""))
    if not report_only:
        run_specs(ctx, [s for suite in suites for name, specs in stage1_specs(ctx, suite).items()
                        if chosen(name) for s in specs], "stage 1")
        stage2 = []
        for suite in suites:
            for name, specs in stage1_specs(ctx, suite).items():
                lr, _ = choose_lr(ctx, specs)
                if lr is not None and chosen(name):
                    stage2 += stage2_specs(ctx, suite, name, lr, n_seeds_of(suite))
        run_specs(ctx, stage2, "stage 2")
    oracle = dataset_oracle(ctx)
    texts = [write_report(ctx, suite, n_seeds_of(suite), oracle) for suite in suites]
    for text in texts:
        out(text)
    return texts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", nargs="+", choices=sorted(SUITES) + ["all"])
    parser.add_argument("--dataset", help="dataset_id (a section of dataset_config.yaml and protocol.yaml)")
    parser.add_argument("--seeds", type=int, help="seeds in stage 2 (default: the suite's, 3 or 2)")
    parser.add_argument("--lrs", type=float, nargs="+", help="stage-1 learning rates (default: the protocol's)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, each in its own process")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: CPUs / jobs with "
                                                    "--jobs > 1, else torch's default / OMP_NUM_THREADS)")
    parser.add_argument("--gpu", type=int, default=-1)
    parser.add_argument("--tiny", action="store_true", help="use the <Model>_tiny templates (small networks)")
    parser.add_argument("--entries", nargs="+", metavar="NAME",
                        help="run only these entries of the suite(s); the report covers them all")
    parser.add_argument("--report", action="store_true", help="only rebuild tables and charts from the cache")
    parser.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--model-zoo", help="FuxiCTR v2.0.4's model_zoo/ folder, for the entries that run "
                                            "FuxiCTR's own models")
    parser.add_argument("--config", default=os.path.join(REPO, "config"))
    parser.add_argument("--protocol", default=DEFAULT_PROTOCOL)
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="cache and report folder")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one spec file
    args = parser.parse_args(argv)
    if not args.worker and not (args.suite and args.dataset):
        parser.error("--suite and --dataset are required")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        with open(args.worker) as f:
            record = execute(json.load(f))
        return 0 if record["status"] == "ok" else 1
    try:
        protocol = load_protocol(args.protocol, args.dataset)
        if args.lrs:
            protocol["lrs"] = args.lrs
        suites = [SUITES[s] for s in (sorted(SUITES) if "all" in args.suite else args.suite)]
        ctx = Context(args.dataset, args.config, protocol, args.results, args.tiny, args.jobs,
                      args.threads, args.gpu, args.keep_checkpoints, args.retry_failed, args.model_zoo)
        run_suites(ctx, suites, lambda s: args.seeds or s.seeds, report_only=args.report,
                   entries=args.entries)
    except UserError as exc:
        return report_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
