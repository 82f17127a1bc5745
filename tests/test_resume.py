"""Training that survives: a run killed at any step (or mid-write) and run again ends with the
same parameters and metrics, bit for bit, as an uninterrupted one; checkpoints are written
atomically; a non-finite loss stops or skips with one line; file faults get one line, exit 2."""
import errno
import os
import shutil

import pytest
import torch

from conftest import REPO, run_expid as run_cli
from interformer_fuxi import training_state
from interformer_fuxi.errors import UserError
from interformer_fuxi.models.base import CTRModel
from interformer_fuxi.runner import run_expid

EXPID = "InterFormer_short"
# InterFormer_tiny with 23 steps per epoch, a state every 4 steps and at each epoch's end, 2 epochs
SHORT = {"epochs": 2, "batch_size": 256, "checkpoint_steps": 4, "early_stop_patience": 5}


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (not even ``except Exception`` clean-up)."""


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copytree(os.path.join(REPO, "config"), tmp_path / "config")
    shutil.copytree(os.path.join(REPO, "data", "tiny_amazon"), tmp_path / "data" / "tiny_amazon")
    from interformer_fuxi.config import dump_yaml, read_sections
    section = dict(read_sections(str(tmp_path / "config"), "model_config")["InterFormer_tiny"], **SHORT)
    with open(tmp_path / "config" / "model_config.yaml", "a") as f:
        f.write("\n" + dump_yaml({EXPID: section}))
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)  # bitwise reproducibility, as for OMP_NUM_THREADS=1
    yield tmp_path
    torch.set_num_threads(torch.get_num_threads())


def train(resume=True, **overrides):
    _, model, valid, test = run_expid("config", EXPID, overrides=dict({"verbose": 0}, **overrides), resume=resume)
    return {k: v.clone() for k, v in model.state_dict().items()}, valid, test


def kill_at(monkeypatch, step):
    """Kill the run when it is about to take optimizer step ``step`` (1-based, over the run)."""
    real = CTRModel.train_step

    def train_step(self, batch):
        if self._total_steps == step:
            raise Killed()
        return real(self, batch)
    monkeypatch.setattr(CTRModel, "train_step", train_step)


def assert_same(a, b):
    params_a, valid_a, test_a = a
    params_b, valid_b, test_b = b
    assert params_a.keys() == params_b.keys()
    assert all(torch.equal(params_a[k], params_b[k]) for k in params_a)
    assert valid_a == valid_b and test_a == test_b


def state_file(root):
    return root / "checkpoints" / "tiny_amazon" / f"{EXPID}.model.state"


def test_runs_killed_at_any_step_resume_to_the_same_bits(project, monkeypatch):
    reference = train()
    assert not state_file(project).exists()  # a finished run leaves no state: the next one starts over
    # mid-epoch after a state, right after one, at an epoch's last step, the next epoch's first
    for step in (3, 5, 23, 24, 41):
        with monkeypatch.context() as m:
            kill_at(m, step)
            with pytest.raises(Killed):
                train()
        assert state_file(project).exists() == (step > 4)  # before the first state: nothing to resume
        assert_same(train(), reference)


def test_a_kill_while_the_state_is_written_leaves_the_previous_state(project, monkeypatch):
    reference = train()
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):  # the 3rd state write dies half-way through the file
        if isinstance(obj, dict) and "optimizer" in obj:
            calls.append(1)
            if len(calls) == 3:
                f.write(b"PK\x03\x04 half a file")
                raise Killed()
        return real_save(obj, f, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(training_state.torch, "save", save)
        with pytest.raises(Killed):
            train()
    folder = project / "checkpoints" / "tiny_amazon"
    state = training_state.load(str(state_file(project)))
    assert (state["epoch"], state["batch"]) == (0, 8)  # the 2nd write (after step 8), whole
    # a SIGKILL runs no clean-up: its half-written temporary file stays, and is never read
    (folder / f".{EXPID}.model.state.x1y2z3").write_bytes(b"PK\x03\x04 half a file")
    assert_same(train(), reference)


def test_fresh_starts_over_and_a_state_of_other_settings_is_refused(project, monkeypatch):
    with monkeypatch.context() as m:
        kill_at(m, 10)
        with pytest.raises(Killed):
            train()
    with pytest.raises(UserError, match="a resumable state of other settings.*--fresh"):
        train(learning_rate=1e-2)
    reference = train(learning_rate=1e-2, resume=False)
    assert not state_file(project).exists()
    with monkeypatch.context() as m:
        kill_at(m, 10)
        with pytest.raises(Killed):
            train()
    assert_same(train(epochs=2, verbose=1), train(resume=False))  # epochs and verbose may change
    assert reference[1] != train()[1]


def test_the_resumed_run_says_so_and_appends_to_its_log(project):
    first = run_cli(project / "config", EXPID, project, timeout=300)
    assert first.returncode == 0, first.stderr
    log = project / "checkpoints" / "tiny_amazon" / f"{EXPID}.log"
    # the state a kill at step 30 leaves (the one after step 28): run the same command again
    with pytest.MonkeyPatch.context() as m:
        kill_at(m, 30)
        with pytest.raises(Killed):
            train()
    assert state_file(project).exists()
    log.write_text("the interrupted run's log\n")
    cmd = run_cli(project / "config", EXPID, project, timeout=300)
    assert cmd.returncode == 0, cmd.stderr
    text = log.read_text()
    assert text.startswith("the interrupted run's log\n")
    assert "Resuming from" in text and "epoch 2, batch 5 of 23 (step 28); --fresh starts over" in text
    assert not state_file(project).exists()


@pytest.mark.parametrize("mode", ["stop", "skip_batch"])
def test_a_non_finite_loss_stops_with_one_line_or_skips_the_batch(project, monkeypatch, mode):
    real = CTRModel.compute_loss

    def compute_loss(self, return_dict, y_true):
        loss = real(self, return_dict, y_true)
        return loss * float("nan") if self._total_steps in (7, 9) else loss
    monkeypatch.setattr(CTRModel, "compute_loss", compute_loss)
    if mode == "stop":
        with pytest.raises(UserError) as err:
            train(nonfinite=mode)
        assert str(err.value).startswith("non-finite loss at epoch 1, step 7, batch 7 of 23: training stopped")
        assert state_file(project).exists()  # the last good state (after step 4) is kept
        assert training_state.load(str(state_file(project)))["total_steps"] == 4
    else:
        params, valid, _ = train(nonfinite=mode)
        assert all(torch.isfinite(p).all() for p in params.values()) and valid["AUC"] > 0.5


def error_line(out):
    """The command's one ``error:`` line (the log goes to stderr too), checked to be the last."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert [l for l in lines if l.startswith("error: ")] == lines[-1:], out.stderr[-2000:]
    return lines[-1]


def test_file_faults_get_one_line_and_exit_2(project):
    config, work = project / "config", project / "work"
    work.mkdir()
    # the BARS result line cannot be written: config.csv is a folder
    (work / "config.csv").mkdir()
    line = error_line(run_cli(config, EXPID, work, timeout=300))
    assert "config.csv: cannot append the result line" in line and f"[exp_id] {EXPID}" in line
    # model_root is a file: no log, no checkpoint can go there
    (work / "config.csv").rmdir()
    (project / "model_root_file").write_text("")
    with open(config / "model_config.yaml", "a") as f:
        f.write("\nInterFormer_badroot:\n    model: InterFormer\n    dataset_id: tiny_amazon\n"
                f"    model_root: {project / 'model_root_file'}\n    epochs: 1\n")
    line = error_line(run_cli(config, "InterFormer_badroot", work, timeout=300))
    assert "model_root_file/tiny_amazon/InterFormer_badroot.log: cannot write the log" in line
    # a truncated H5 split
    test_h5 = project / "data" / "processed" / "tiny_amazon" / "test.h5"
    test_h5.write_bytes(test_h5.read_bytes()[:1000])
    line = error_line(run_cli(config, EXPID, work, timeout=300))
    assert "tiny_amazon: unreadable test H5 data" in line and "delete the folder" in line


def test_a_truncated_checkpoint_or_state_gets_one_line(project, monkeypatch):
    from interformer_fuxi.runner import load_trained

    train(epochs=1)
    checkpoint = project / "checkpoints" / "tiny_amazon" / f"{EXPID}.model"
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    with pytest.raises(UserError, match=f"{checkpoint}: unreadable checkpoint"):
        load_trained("config", EXPID)
    state_file(project).write_bytes(b"not a state")
    with pytest.raises(UserError, match="unreadable training state .*--fresh"):
        train()


def test_a_full_disk_while_checkpointing_gets_one_line_and_no_partial_file(project, monkeypatch):
    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(training_state.torch, "save", full)
    with pytest.raises(UserError, match=rf"{EXPID}.model: cannot write the checkpoint \(No space left"):
        train(checkpoint_steps=None)
    assert sorted(p.name for p in (project / "checkpoints" / "tiny_amazon").iterdir()) == [f"{EXPID}.log"]
