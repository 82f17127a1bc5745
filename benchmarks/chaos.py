"""Kill a training run at random points, run the same command again, compare with a run never killed.

    python benchmarks/chaos.py --kills 20            # about 8 minutes on 2 cores
    python benchmarks/chaos.py --kills 3 --quick     # one epoch, about a minute
    python benchmarks/chaos.py --kills 0 --fuzz 10000   # fuzzed CSVs and configs only

A small expid (``InterFormer_tiny`` on the embedded ``tiny_amazon``, 2 epochs of 23 steps,
a resumable state every 3 steps and at each epoch's end) runs once uninterrupted, as
``run_expid.py`` with ``OMP_NUM_THREADS=1``. Then, ``--kills`` times, in a fresh copy of the
project: the same command starts, gets SIGKILL at a random moment of its training (uniform
over the uninterrupted run's training time), and runs again until it finishes. Every other kill waits for a checkpoint write to begin and kills inside it (the
child's ``os.fsync`` is slowed by 50 ms so that the write lasts long enough to be hit; the
run again is a plain ``run_expid.py``). A killed-and-resumed run is *identical* when its
best checkpoint holds bitwise the same tensors and its BARS result line the same metrics as
the uninterrupted run's; its *lost rows* are the training rows its log counts short of the
uninterrupted run's (steps x batch size). The last line is
``RESULT kills=N resumed=N identical=N lost_rows=0``.

``--fuzz M`` then generates M inputs (half CSV files for the validator, in ``fail`` and
``skip`` mode, half model_config.yaml files for the config reader; ``tests/fuzz_inputs.py``)
and counts the *crashes*: any outcome other than acceptance or one ``UserError`` line. It
prints ``RESULT fuzz_cases=M crashes=0`` and the first crashing input of each kind, if any.
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

EXPID = "InterFormer_chaos"
SETTINGS = {"epochs": 2, "batch_size": 256, "checkpoint_steps": 3, "early_stop_patience": 5}
# the child run with a slow fsync: checkpoint writes last long enough to be killed inside
SLOW_FSYNC = ("import os, runpy, sys, time; fsync = os.fsync; "
              "os.fsync = lambda fd: (time.sleep(0.05), fsync(fd))[1]; "
              "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def make_project(root, settings):
    from interformer_fuxi.config import dump_yaml, read_sections

    shutil.copytree(os.path.join(REPO, "config"), os.path.join(root, "config"))
    shutil.copytree(os.path.join(REPO, "data", "tiny_amazon"), os.path.join(root, "data", "tiny_amazon"))
    section = dict(read_sections(os.path.join(root, "config"), "model_config")["InterFormer_tiny"], **settings)
    with open(os.path.join(root, "config", "model_config.yaml"), "a") as f:
        f.write("\n" + dump_yaml({EXPID: section}))


def command(root, slow=False):
    args = [os.path.join(REPO, "run_expid.py"), "--config", os.path.join(root, "config"), "--expid", EXPID]
    return [sys.executable, "-c", SLOW_FSYNC] + args if slow else [sys.executable] + args


def run(root, slow=False):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(command(root, slow), cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def outcome(root):
    """(best checkpoint's tensors, the result line's metrics, steps trained) of a finished run."""
    import torch

    model_dir = os.path.join(root, "checkpoints", "tiny_amazon")
    params = torch.load(os.path.join(model_dir, EXPID + ".model"), map_location="cpu")
    with open(os.path.join(root, "config.csv")) as f:
        line = f.read().strip().splitlines()[-1]
    with open(os.path.join(model_dir, EXPID + ".log")) as f:
        steps = [int(s) for s in re.findall(r"Training finished: (\d+) steps", f.read())]
    return params, line[line.index("[val]"):], steps[-1]


def same(a, b):
    import torch
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def wait_for(proc, model_dir, text):
    """Until the run's log holds ``text`` (or the run ends); returns the time."""
    log = os.path.join(model_dir, EXPID + ".log")
    while proc.poll() is None:
        if os.path.exists(log):
            with open(log) as f:
                if text in f.read():
                    break
        time.sleep(0.01)
    return time.time()


def kill_inside_a_write(proc, model_dir, deadline):
    """SIGKILL as soon as a checkpoint's temporary file appears (or at the deadline)."""
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(model_dir) and any(n.startswith(".") for n in os.listdir(model_dir)):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)


def fuzz(cases):
    """Run ``cases`` generated inputs through the checks; returns (cases run, crashes, examples)."""
    import collections
    import logging

    from hypothesis import HealthCheck, given, settings

    from fuzz_inputs import check_config, check_csv, config_text, csv_bytes

    logging.disable(logging.WARNING)  # the validator logs every accepted file
    counts, crashes, examples = collections.Counter(), [], {}

    def record(kind, case, run):
        counts[kind] += 1
        try:
            counts[run()] += 1
        except Exception as exc:  # noqa: BLE001  (what the fuzzing looks for)
            crashes.append(kind)
            examples.setdefault(kind, (case, f"{type(exc).__name__}: {exc}"[:300]))

    options = settings(max_examples=cases // 2, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck))

    @options
    @given(csv_bytes())
    def csv_cases(data):
        with tempfile.TemporaryDirectory() as folder:
            record("csv", data, lambda: check_csv(data, folder, "fail" if counts["csv"] % 2 else "skip"))

    @options
    @given(config_text())
    def config_cases(text):
        with tempfile.TemporaryDirectory() as folder:
            record("config", text, lambda: check_config(text, folder))

    csv_cases()
    config_cases()
    logging.disable(logging.NOTSET)
    print(f"fuzz: {counts['csv']} CSV files, {counts['config']} configs; accepted {counts['ok']}, "
          f"refused with one line {counts['refused']}, crashes {len(crashes)}")
    for kind, (case, error) in examples.items():
        print(f"first {kind} crash: {error}\n  input: {case!r}"[:1000])
    return counts["csv"] + counts["config"], len(crashes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one epoch instead of two")
    parser.add_argument("--fuzz", type=int, default=0, help="also run this many fuzzed inputs")
    args = parser.parse_args(argv)
    if args.kills:
        kill_runs(args)
    if args.fuzz:
        cases, crashes = fuzz(args.fuzz)
        print(f"RESULT fuzz_cases={cases} crashes={crashes}")


def kill_runs(args):
    rng = random.Random(args.seed)
    settings = dict(SETTINGS, epochs=1) if args.quick else SETTINGS
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "reference")
        make_project(base, settings)
        ref_proc = run(base)
        ref_dir = os.path.join(base, "checkpoints", "tiny_amazon")
        start = wait_for(ref_proc, ref_dir, "Start training")
        wall = wait_for(ref_proc, ref_dir, "Training finished") - start  # kills land in this span
        if ref_proc.wait() != 0:
            sys.exit(f"the uninterrupted run failed: {ref_proc.stderr.read()[-2000:]}")
        ref_params, ref_metrics, ref_steps = outcome(base)
        print(f"uninterrupted: {ref_steps} steps, {wall:.1f}s of training; "
              f"{ref_metrics}", flush=True)
        resumed = identical = lost = 0
        for i in range(args.kills):
            trial = os.path.join(tmp, f"trial{i}")
            shutil.copytree(base, trial, ignore=shutil.ignore_patterns("checkpoints", "config.csv"))
            in_write = i % 2 == 1
            proc = run(trial, slow=in_write)
            model_dir = os.path.join(trial, "checkpoints", "tiny_amazon")
            wait_for(proc, model_dir, "Start training")
            if in_write:  # after a random wait, at the next checkpoint write
                time.sleep(rng.uniform(0.0, 0.8 * wall))
                kill_inside_a_write(proc, model_dir, time.time() + wall)
            else:
                time.sleep(rng.uniform(0.0, wall))
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            state = os.path.exists(os.path.join(model_dir, EXPID + ".model.state"))
            again = run(trial)
            if again.wait() != 0:
                print(f"kill {i + 1}: the run again failed: {again.stderr.read().strip().splitlines()[-1:]}")
                continue
            resumed += 1
            params, metrics, steps = outcome(trial)
            ok = same(params, ref_params) and metrics == ref_metrics
            identical += ok
            lost += max(ref_steps - steps, 0) * settings["batch_size"]
            print(f"kill {i + 1}: {'inside a checkpoint write' if in_write else 'at a random moment'}, "
                  f"{'resumed from its state' if state else 'no state yet (started over)'}: "
                  f"{'identical' if ok else 'DIFFERENT'}", flush=True)
            shutil.rmtree(trial, ignore_errors=True)
    print(f"RESULT kills={args.kills} resumed={resumed} identical={identical} lost_rows={lost}")


if __name__ == "__main__":
    main()
