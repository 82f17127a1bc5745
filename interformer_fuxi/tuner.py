"""``run_param_tuner.py``: grid search over a tuner yaml, one ``run_expid.py`` process per trial.

``--gpu 0 1 2 3`` gives four slots, one trial each at a time; a repeated id (``--gpu 0 0``)
runs several trials on that device at once; ``-1`` is the CPU. A comma-joined group is one
slot whose trials train data-parallel on all its devices (``--gpu 0,1 2,3``: two trials at a
time, two GPUs each; ``-1,-1``: two CPU processes), each under its own ``torchrun --standalone``.
The flow:

1. check the yaml and enumerate the grid (:mod:`interformer_fuxi.tuner_config`), write the
   expanded configs to ``<yaml dir>/<yaml name>/``;
2. skip trials that already have a line in the results CSV ``<yaml name>.csv`` of the working
   directory (where ``run_expid.py`` appends them), so a rerun resumes;
3. run the rest; a trial's console goes to ``<model_root>/<dataset_id>/<expid>.out`` next to
   FuxiCTR's ``<expid>.log`` and checkpoint; a failed trial is reported with that path and the
   sweep goes on. A trial whose dataset is not built yet waits while another trial builds it;
4. print all trials ranked by the validation monitor, best first, and write them to
   ``<yaml name>_summary.csv``.

Replaces FuxiCTR's ``grid_search``, whose slot bookkeeping re-queues a finished slot at every
poll (so more trials than slots run at once), which runs ``python`` from PATH, ignores failures
and selects ``--tag`` by substring.
"""
import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

from .errors import UserError, report
from .results import format_table, rank, read_results, summary_table, write_csv_atomic
from .tuner_config import enumerate_trials, load_tuner_config, resolved, select_trials, write_expanded

RUN_EXPID = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_expid.py")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Grid search over a FuxiCTR tuner yaml.")
    # argparse reads "-1" as a value but "-1,-1" (a group of CPU processes) as an option
    parser._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$")
    parser.add_argument("--config", required=True, help="tuner yaml (base_config, base_expid, tuner_space)")
    parser.add_argument("--gpu", type=device_group, nargs="+", default=[(-1,)],
                        help="one slot per id: '0 1 2 3' runs four trials at once, '0 0' two on GPU 0, "
                             "-1 the CPU (default: -1); a comma-joined group trains each trial "
                             "data-parallel on its devices: '0,1 2,3' runs two trials, two GPUs each")
    parser.add_argument("--tag", nargs="+", default=None,
                        help="run only these trials: full expids, indices (3 or 003) or hashes")
    parser.add_argument("--model_zoo", default=None,
                        help="a FuxiCTR 2.0.x checkout's model_zoo/ folder: its models run the trials, and a "
                             "BARS yaml's base_config (../model_zoo/<Model>/config/) is found beside it")
    parser.add_argument("--dry-run", action="store_true",
                        help="write the expanded configs and list the trials without running them")
    args = parser.parse_args(argv)
    if args.model_zoo:
        args.model_zoo = os.path.abspath(args.model_zoo)
    return args


def device_group(text):
    """``"0,1"`` -> ``(0, 1)``: the devices of one tuner slot."""
    try:
        group = tuple(int(g) for g in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a device id or a comma-joined group such as 0,1") from None
    if len(group) > 1 and (-1 in group) and set(group) != {-1}:
        raise argparse.ArgumentTypeError(f"{text!r}: a group is all GPUs or all -1 (CPU processes)")
    return group


@dataclass
class Job:
    trial: object
    slot: int
    gpu: tuple
    proc: subprocess.Popen
    out_path: str
    out_file: object
    start: float


def device_name(group):
    if group[0] < 0:
        return "cpu" if len(group) == 1 else f"cpu x{len(group)} processes"
    return ("gpu " if len(group) == 1 else "gpus ") + ",".join(map(str, group))


def trial_command(group):
    """The launcher of a trial on ``group``: python for one device, torchrun for several."""
    if len(group) == 1:
        return [sys.executable, "-u", RUN_EXPID]
    return [sys.executable, "-u", "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(len(group)), RUN_EXPID]


def last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class Sweep:
    """Runs trials over device slots; ``outcomes`` maps expid -> ``("done"|"failed", message)``."""

    def __init__(self, cfg, trials, datasets, slots, results_csv, poll=0.2):
        self.cfg, self.trials, self.datasets = cfg, trials, datasets
        self.slots, self.results_csv, self.poll = list(slots), results_csv, poll
        self.outcomes = {}

    def out_path(self, trial):
        return os.path.join(resolved(trial.section, self.cfg, "model_root"), trial.dataset_id, trial.expid + ".out")

    def log_path(self, trial):
        return os.path.join(resolved(trial.section, self.cfg, "model_root"), trial.dataset_id, trial.expid + ".log")

    def _data_built(self, dataset_id):
        dataset = self.datasets[dataset_id]
        if dataset.get("data_format", "csv") != "csv":
            return True
        return os.path.isfile(os.path.join(resolved(dataset, self.cfg, "data_root"), dataset_id, "feature_map.json"))

    def _launch(self, trial, slot):
        gpu = self.slots[slot]
        out_path = self.out_path(trial)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        out_file = open(out_path, "w")
        cmd = trial_command(gpu) + ["--config", self.cfg.config_dir, "--expid", trial.expid,
                                    "--gpu", *map(str, gpu)]
        if self.cfg.model_zoo:
            cmd += ["--model_zoo", self.cfg.model_zoo]
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return Job(trial, slot, gpu, proc, out_path, out_file, time.time())

    def _finish(self, job, rc, done_count, total):
        job.out_file.close()
        secs = time.time() - job.start
        result = read_results(self.results_csv).get(job.trial.expid)
        if rc == 0 and result is not None:
            metrics = " - ".join(f"{k}: {v:.6f}" for k, v in result["val"].items())
            self.outcomes[job.trial.expid] = ("done", "")
            print(f"[{done_count}/{total}] done   {job.trial.expid} ({device_name(job.gpu)}, {secs:.0f}s) "
                  f"val {metrics}", flush=True)
        else:
            why = last_line(job.out_path) if rc != 0 else "finished without a result line"
            self.outcomes[job.trial.expid] = ("failed", why)
            print(f"[{done_count}/{total}] FAILED {job.trial.expid} ({device_name(job.gpu)}, exit {rc}): "
                  f"{why} -- log: {job.out_path}", flush=True)

    def run(self, pending):
        pending, running, building = list(pending), {}, set()
        total, finished = len(pending), 0
        try:
            while pending or running:
                for slot, job in list(running.items()):
                    rc = job.proc.poll()
                    if rc is None:
                        continue
                    del running[slot]
                    building.discard(job.trial.dataset_id)
                    finished += 1
                    self._finish(job, rc, finished, total)
                for slot in range(len(self.slots)):
                    if slot in running:
                        continue
                    # a trial whose data is being built by another one waits, so data is built once
                    trial = next((t for t in pending if t.dataset_id not in building), None)
                    if trial is None:
                        break
                    pending.remove(trial)
                    if not self._data_built(trial.dataset_id):
                        building.add(trial.dataset_id)
                    running[slot] = self._launch(trial, slot)
                    print(f"start  {trial.expid} on {device_name(self.slots[slot])}", flush=True)
                if running:
                    time.sleep(self.poll)
        except KeyboardInterrupt:
            for job in running.values():
                job.proc.terminate()
            for job in running.values():
                job.proc.wait()
                job.out_file.close()
            raise


def monitor_text(monitor):
    if isinstance(monitor, dict):
        return " + ".join(m if w == 1 else f"{w}*{m}" for m, w in monitor.items())
    return str(monitor)


def summarize(cfg, trials, sweep_outcomes, results_csv, log_path):
    """Print and write (``<yaml name>_summary.csv``) all trials, best validation monitor first."""
    results = read_results(results_csv)
    rows = []
    for t in trials:
        r = results.get(t.expid)
        status, why = sweep_outcomes.get(t.expid, ("done" if r else "not run", ""))
        if r and status != "failed":
            status = "done"
        rows.append({"exp_id": t.expid, "status": status if not why else f"{status}: {why}"[:200],
                     "val": r["val"] if r and status == "done" else {},
                     "test": r["test"] if r and status == "done" else {},
                     "tuned": t.tuned, "dataset_id": t.dataset_id, "log": log_path(t)})
    # the monitor may itself be set in tuner_space (one value): take the trials' own
    monitor, mode = trials[0].section.get("monitor", "AUC"), trials[0].section.get("monitor_mode", "max")
    ranked = rank(rows, monitor, mode)
    names = list(dict.fromkeys(m for r in ranked for m in list(r["val"]) + list(r["test"])))
    header, table = summary_table(ranked, names, list(cfg.space))
    path = os.path.abspath(cfg.name + "_summary.csv")
    write_csv_atomic(path, header, table)
    print(f"\nAll trials ranked by the validation monitor {monitor_text(monitor)} ({mode}):")
    print(format_table(header, table))
    print(f"\nSummary: {path}\nResults: {results_csv}")
    return ranked


def tune(args):
    cfg = load_tuner_config(args.config, args.model_zoo)
    trials, datasets = enumerate_trials(cfg)
    selected = select_trials(trials, args.tag)
    config_dir = write_expanded(cfg, trials, datasets)
    results_csv = os.path.abspath(cfg.name + ".csv")  # run_expid.py appends <config dir name>.csv here
    done = read_results(results_csv)
    todo = [t for t in selected if t.expid not in done]
    skipped = len(selected) - len(todo)
    print(f"{len(trials)} trials in {cfg.path} ({len(datasets)} dataset config(s)); expanded configs "
          f"in {config_dir}/; {len(selected)} selected, {skipped} already in {results_csv} (skipped), "
          f"{len(todo)} to run on {' '.join(device_name(g) for g in args.gpu)}", flush=True)
    if args.dry_run:
        for t in selected:
            state = "done" if t.expid in done else "to run"
            print(f"{t.expid}  {t.dataset_id}  {state}  " + " ".join(f"{k}={v}" for k, v in t.tuned.items()))
        return 0
    sweep = Sweep(cfg, trials, datasets, args.gpu, results_csv)
    sweep.run(todo)
    summarize(cfg, selected, sweep.outcomes, results_csv, sweep.log_path)
    failed = [e for e, (s, _) in sweep.outcomes.items() if s == "failed"]
    if failed:
        print(f"{len(failed)} trial(s) failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return tune(args)
    except UserError as exc:
        return report(exc)
    except KeyboardInterrupt:
        print("interrupted: running trials stopped; rerun the same command to resume", file=sys.stderr)
        return 130
