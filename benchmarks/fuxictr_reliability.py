"""What FuxiCTR 2.0.4's own training loop does when a run is killed, killed mid-checkpoint, or
meets a NaN loss; tried on its DIN (from a FuxiCTR checkout's model_zoo) and on this package's
loop in the same situations.

    python benchmarks/fuxictr_reliability.py --model-zoo <FuxiCTR v2.0.4 checkout>/model_zoo

Everything runs on the embedded ``tiny_amazon`` in a temporary copy of the project (about a
minute). Prints one line per situation and model.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DIN = {"model": "DIN", "dataset_id": "tiny_amazon", "loss": "binary_crossentropy", "metrics": ["gAUC", "AUC", "logloss"],
       "task": "binary_classification", "optimizer": "adam", "learning_rate": 1e-3, "embedding_regularizer": 0,
       "net_regularizer": 0, "batch_size": 128, "embedding_dim": 16, "epochs": 2, "shuffle": True, "seed": 2024,
       "monitor": "AUC", "monitor_mode": "max", "din_target_field": [("item_id", "cate_id")],
       "din_sequence_field": [("item_history", "cate_history")], "attention_hidden_units": [32],
       "dnn_hidden_units": [64], "verbose": 0}
# a big enough state that torch.save takes a moment: the kill lands inside the write
WRITER = ("import sys, torch; from fuxictr.pytorch.models import BaseModel; "
          "m = torch.nn.Linear(16384, 8192); "
          "{save}(m, sys.argv[1]); print('done')")


class Killed(BaseException):
    pass


def project(root, model_zoo):
    from interformer_fuxi.config import dump_yaml

    shutil.copytree(os.path.join(REPO, "config"), os.path.join(root, "config"))
    shutil.copytree(os.path.join(REPO, "data", "tiny_amazon"), os.path.join(root, "data", "tiny_amazon"))
    with open(os.path.join(root, "config", "model_config.yaml"), "a") as f:
        f.write("\n" + dump_yaml({"DIN_fuxictr": dict(DIN, model_zoo=model_zoo),
                                  "DIN_here": dict(DIN, checkpoint_steps=5)}))


def train(config, expid):
    """Train ``expid``: a FuxiCTR zoo model with FuxiCTR 2.0.4's own ``BaseModel`` loop (the class
    as its checkout defines it; this package's runner puts its own loop in front), this
    package's models with this package's."""
    from fuxictr.pytorch.dataloaders import H5DataLoader

    from interformer_fuxi.runner import prepare

    params, feature_map, model_class = prepare(config, expid, log=False)
    if params.get("model_zoo"):
        model_class = model_class.__bases__[1]  # (CTRModel, FuxiCTR's class) -> FuxiCTR's class
    model = model_class(feature_map, **{k: v for k, v in params.items() if not k.startswith("_")})
    os.makedirs(model.model_dir, exist_ok=True)  # FuxiCTR's set_logger makes it in its run_expid
    train_gen, valid_gen = H5DataLoader(feature_map, stage="train", **params).make_iterator()
    model.fit(train_gen, validation_data=valid_gen, **params)
    return model.evaluate(valid_gen)


def raw_class(config, expid):
    from interformer_fuxi.config import load_expid
    from interformer_fuxi.registry import get_model

    params = load_expid(config, expid)
    model_class = get_model(params["model"], params.get("model_zoo"))
    return model_class.__bases__[1] if params.get("model_zoo") else model_class


def first_step_after_kill(config, expid, kill_step):
    """Train, 'kill' at ``kill_step``, train again: the step the second run starts from."""
    from interformer_fuxi.errors import UserError

    steps, killed = [], []

    def hook(model_class):
        real = model_class.train_step

        def train_step(self, batch):
            steps.append(self._total_steps)  # FuxiCTR counts a step before taking it
            if not killed and self._total_steps == kill_step:
                killed.append(True)
                raise Killed()
            return real(self, batch)
        model_class.train_step = train_step
        return real

    model_class = raw_class(config, expid)
    real = hook(model_class)
    try:
        try:
            train(config, expid)
        except Killed:
            pass
        steps.clear()
        try:
            train(config, expid)
        except UserError as exc:
            return f"error: {exc}"
        return steps[0]
    finally:
        model_class.train_step = real


def nan_outcome(config, expid):
    """Train with a NaN loss from step 5 on: what the run ends with."""
    model_class = raw_class(config, expid)
    real = model_class.compute_loss

    def compute_loss(self, return_dict, y_true):
        loss = real(self, return_dict, y_true)
        return loss * float("nan") if self._total_steps >= 5 else loss
    model_class.compute_loss = compute_loss
    try:
        valid = train(config, expid)
        return f"finished, validation {valid}"
    except BaseException as exc:  # what a user would see
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    finally:
        model_class.compute_loss = real


def killed_write(tmp, save):
    """Kill a process inside ``save(model, path)`` over an existing good file; what is left."""
    import torch

    os.makedirs(os.path.join(tmp, "writes", str(len(save))), exist_ok=True)
    path = os.path.join(tmp, "writes", str(len(save)), "model.model")
    torch.save({"weight": torch.zeros(1)}, path)  # the previous, good checkpoint
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(save=save), path], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    folder = os.path.dirname(path)
    written = lambda: sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
    before, start = written(), time.time()
    while time.time() - start < 60:  # kill once 1 MB of the new file is written (in place or aside)
        if written() > before + 10 ** 6 or proc.poll() is not None:
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        state = torch.load(path, map_location="cpu")
        return ("loads the previous checkpoint" if "weight" in state and state["weight"].numel() == 1
                else "loads the new checkpoint (the write had finished)")
    except Exception as exc:
        return f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-zoo", required=True, help="a FuxiCTR v2.0.4 checkout's model_zoo/ folder")
    args = parser.parse_args(argv)
    import logging
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        project(tmp, os.path.abspath(args.model_zoo))
        config = os.path.join(tmp, "config")
        for expid, who in (("DIN_fuxictr", "FuxiCTR 2.0.4's loop (its DIN)"), ("DIN_here", "this package (its DIN)")):
            step = first_step_after_kill(config, expid, 12)
            print(f"{who}: killed at step 12 of 90, the same command again starts at step {step}")
        for expid, who in (("DIN_fuxictr", "FuxiCTR 2.0.4's loop (its DIN)"), ("DIN_here", "this package (its DIN)")):
            print(f"{who}: NaN loss from step 5 -> {nan_outcome(config, expid)}")
        for save, who in (("BaseModel.save_weights", "FuxiCTR 2.0.4's save_weights"),
                          ("__import__('interformer_fuxi.models.base', fromlist=['x']).CTRModel.save_weights",
                           "this package's save_weights")):
            print(f"{who}: killed inside the write over a good checkpoint -> {killed_write(tmp, save)}")


if __name__ == "__main__":
    main()
