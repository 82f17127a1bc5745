"""Data-parallel training under torchrun, on the CPU with gloo: two ranks train the same model
as one process with the same seed and global batch, gathered metrics equal one process's
scoring, every row is read once per epoch, a failing rank ends the job with its message, and a
two-"node" run on localhost (c10d rendezvous) works."""
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO
from interformer_fuxi import distributed
from interformer_fuxi.distributed import ShardedBatches, ShardedBlockRows, ShardedBlocks, ShardedRows, shard_bounds

EXPID = "InterFormer_ddp"
# InterFormer_tiny (5,681 training rows) with a global batch of 512: 12 steps per epoch, the last
# one short (49 rows); no dropout, so ranks differ from one process only in float summation order
DDP = {"epochs": 2, "batch_size": 512, "early_stop_patience": 5, "verbose": 0}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cwd, *launch, script=None, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, script or os.path.join(REPO, "run_expid.py"),
           "--config", "../config", "--expid", EXPID, "--gpu", "-1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def make_project(root, **extra):
    shutil.copytree(os.path.join(REPO, "config"), root / "config")
    shutil.copytree(os.path.join(REPO, "data", "tiny_amazon"), root / "data" / "tiny_amazon")
    from interformer_fuxi.config import dump_yaml, read_sections
    section = dict(read_sections(str(root / "config"), "model_config")["InterFormer_tiny"], **DDP, **extra)
    with open(root / "config" / "model_config.yaml", "a") as f:
        f.write("\n" + dump_yaml({EXPID: section}))
    (root / "work").mkdir()
    return root


def checkpoint(root):
    return torch.load(root / "checkpoints" / "tiny_amazon" / f"{EXPID}.model", weights_only=True)


def result_lines(root):
    path = root / "work" / "config.csv"
    return path.read_text().splitlines() if path.exists() else []


def metrics_of(line, split):
    part = line.split(f"[{split}] ")[1].split(",")[0]
    return {k: float(v) for k, v in (kv.split(": ") for kv in part.split(" - "))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process (rank 0 of a world of 1, in this process) and two ranks (torchrun), same seed."""
    single = make_project(tmp_path_factory.mktemp("single"))
    double = make_project(tmp_path_factory.mktemp("double"))
    nodes = make_project(tmp_path_factory.mktemp("nodes"))
    two = torchrun(double / "work", "--nproc_per_node", "2", "--master_port", str(free_port()))
    env = {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cwd, threads = os.getcwd(), torch.get_num_threads()
    try:
        os.chdir(single / "work")
        torch.set_num_threads(1)
        from interformer_fuxi.runner import main
        assert main(["--config", "../config", "--expid", EXPID, "--gpu", "-1"]) == 0
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    rc, out = finish(two)
    assert rc == 0, out[-3000:]
    # two "nodes" of one process each, meeting at a c10d rendezvous on localhost
    endpoint = f"127.0.0.1:{free_port()}"
    launch = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
              "--rdzv_id", "ddp-test"]
    node_procs = [torchrun(nodes / "work", *launch, "--node_rank", str(r)) for r in (0, 1)]
    node_results = [finish(p) for p in node_procs]
    for rc, out in node_results:
        assert rc == 0, out[-3000:]
    return single, double, nodes, node_results


def test_two_ranks_train_the_same_parameters_as_one_process(runs):
    single, double, _, _ = runs
    one, two = checkpoint(single), checkpoint(double)
    assert one.keys() == two.keys()
    worst = max(float((one[k].double() - two[k].double()).abs().max()) for k in one)
    assert worst < 1e-4, f"largest parameter difference {worst}"
    moved = max(float(v.double().abs().max()) for v in one.values())
    assert moved > 1e-2  # the comparison is of trained parameters, not of an untouched init


def test_rank_zero_alone_writes_the_log_and_result_line(runs):
    single, double, _, _ = runs
    assert len(result_lines(double)) == 1 and len(result_lines(single)) == 1
    line = result_lines(double)[0]
    assert "[command] torchrun --nnodes 1 --nproc_per_node 2" in line
    assert sorted(os.listdir(double / "checkpoints" / "tiny_amazon")) == [f"{EXPID}.log", f"{EXPID}.model"]
    log = (double / "checkpoints" / "tiny_amazon" / f"{EXPID}.log").read_text()
    assert log.count("Training finished: 24 steps") == 1  # 12 global batches per epoch, one log


def test_gathered_metrics_equal_one_process_scoring_the_same_checkpoint(runs):
    _, double, _, _ = runs
    line = result_lines(double)[0]
    cwd = os.getcwd()
    try:
        os.chdir(double / "work")
        from interformer_fuxi.runner import load_split, load_trained
        params, feature_map, model = load_trained("../config", EXPID)
        train_gen, valid_gen = load_split(feature_map, params, "train")
        model.train_ctr = model.label_mean(train_gen)  # NE's base rate, as the run had it
        valid = model.evaluate(valid_gen)
        test = model.evaluate(load_split(feature_map, params, "test"))
    finally:
        os.chdir(cwd)
    for name, logged in (("val", valid), ("test", test)):
        gathered = metrics_of(line, name)
        assert gathered.keys() == logged.keys() == {"gAUC", "AUC", "logloss", "NE"}
        for k in gathered:  # the result line rounds to 6 decimals
            assert abs(gathered[k] - logged[k]) < 2e-6, (name, k, gathered[k], logged[k])


def test_a_killed_two_rank_run_resumes_where_it_stopped(runs, tmp_path):
    """SIGKILL on rank 0 at step 10 (a state every 4 steps); the same command again ends with the
    parameters of the uninterrupted two-rank run."""
    _, double, _, _ = runs
    root = make_project(tmp_path, checkpoint_steps=4)
    script = tmp_path / "kill_rank_0.py"
    script.write_text(
        "import os, signal, sys\n"
        "from interformer_fuxi.models.base import CTRModel\n"
        "real = CTRModel.train_step\n"
        "def train_step(self, *args):\n"
        "    if os.environ['RANK'] == '0' and self._total_steps == 10:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(self, *args)\n"
        "CTRModel.train_step = train_step\n"
        "from interformer_fuxi.runner import main\n"
        "sys.exit(main())\n")
    rc, out = finish(torchrun(root / "work", "--nproc_per_node", "2", "--master_port", str(free_port()),
                              script=str(script)))
    assert rc != 0 and result_lines(root) == []
    assert (root / "checkpoints" / "tiny_amazon" / f"{EXPID}.model.state").exists()
    rc, out = finish(torchrun(root / "work", "--nproc_per_node", "2", "--master_port", str(free_port())))
    assert rc == 0, out[-3000:]
    log = (root / "checkpoints" / "tiny_amazon" / f"{EXPID}.log").read_text()
    assert "epoch 1, batch 8 of 12 (step 8)" in log
    a, b = checkpoint(double), checkpoint(root)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_two_nodes_on_localhost_match_two_local_ranks(runs):
    _, double, nodes, node_results = runs
    assert len(result_lines(nodes)) == 1  # global rank 0 only, whichever node it landed on
    assert "--nnodes 2 --nproc_per_node 1" in result_lines(nodes)[0]
    a, b = checkpoint(double), checkpoint(nodes)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4


@pytest.mark.parametrize("num_rows,batch,world", [(5681, 512, 2), (10, 4, 3), (7, 8, 4), (1, 5, 2), (100, 7, 1)])
def test_shards_cover_every_row_once_per_epoch(num_rows, batch, world):
    darray = torch.arange(num_rows).reshape(-1, 1)
    for epoch in (0, 1):
        ranks = [ShardedBatches(darray, batch, world, r, shuffle=True, seed=7) for r in range(world)]
        for s in ranks:
            s.set_epoch(epoch)
        steps = [list(s.indices()) for s in ranks]
        assert len({len(s) for s in steps}) == 1 and len(steps[0]) == len(ranks[0]) == -(-num_rows // batch)
        seen = torch.cat([rows for per_rank in steps for rows, weight in per_rank if weight > 0])
        assert sorted(seen.tolist()) == list(range(num_rows))  # every row once, none twice
        for step in zip(*steps):  # the ranks' weights average to 1: the global batch's mean loss
            assert abs(sum(w for _, w in step) / world - 1) < 1e-12
        # a world of one sees the same global batches, in the same order
        alone = ShardedBatches(darray, batch, 1, 0, shuffle=True, seed=7)
        alone.set_epoch(epoch)
        for (rows, _), step in zip(alone.indices(), zip(*steps)):
            assert torch.equal(rows, torch.cat([r for r, w in step if w > 0]))
    first, second = (ShardedBatches(darray, batch, 1, 0, seed=7) for _ in range(2))
    second.set_epoch(1)
    if num_rows > 2:
        assert not torch.equal(next(iter(first))[0], next(iter(second))[0])  # a new order each epoch


def write_blocks(folder, sizes):
    """H5 blocks as FuxiCTR writes them (``part_<k>.h5``, one dataset per column): row ids in
    ``x`` (1-d) and ``seq`` (2-d), and a label."""
    import h5py
    paths, start = [], 0
    for k, n in enumerate(sizes):
        path = folder / f"part_{k}.h5"
        ids = np.arange(start, start + n)
        with h5py.File(path, "w") as hf:
            hf["x"], hf["seq"], hf["label"] = ids, np.stack([ids, ids], 1), (ids % 2).astype(np.float32)
        paths.append(str(path))
        start += n
    return paths


@pytest.mark.parametrize("sizes,batch,world", [([100, 37, 5], 16, 2), ([7, 1], 4, 3), ([64], 64, 2)])
def test_block_shards_read_every_row_once_with_equal_steps(tmp_path, sizes, batch, world):
    blocks = write_blocks(tmp_path, sizes)
    columns = ["x", "seq", "label"]
    for epoch in (0, 1):
        ranks = [ShardedBlocks(blocks, columns, "label", batch, world, r, seed=3) for r in range(world)]
        for s in ranks:
            s.set_epoch(epoch)
        steps = [list(s) for s in ranks]
        assert {len(s) for s in steps} == {len(ranks[0])} == {sum(-(-n // batch) for n in sizes)}
        rows = torch.cat([b for per_rank in steps for b, w in per_rank if w > 0])
        assert sorted(rows[:, 0].long().tolist()) == list(range(sum(sizes)))
        assert torch.equal(rows[:, 1], rows[:, 0]) and torch.equal(rows[:, 2], rows[:, 0])  # whole rows
        for step in zip(*steps):
            assert abs(sum(w for _, w in step) / world - 1) < 1e-12
            assert sum(len(b) for b, w in step if w > 0) <= batch + world - 1  # rounding per rank
    scored = torch.cat([torch.cat(list(ShardedBlockRows(blocks, columns, "label", 8, world, r)))
                        for r in range(world)])
    assert sorted(scored[:, 0].long().tolist()) == list(range(sum(sizes)))


def test_evaluation_slices_are_contiguous_and_cover_the_split():
    darray = torch.arange(23).reshape(-1, 1)
    parts = [torch.cat(list(ShardedRows(darray, 4, 3, r))) for r in range(3)]
    assert torch.equal(torch.cat(parts), darray)
    assert [shard_bounds(23, 3, r) for r in range(3)] == [(0, 7), (7, 15), (15, 23)]


def test_a_failing_rank_ends_the_job_with_its_message(tmp_path):
    root = make_project(tmp_path)
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(
        "import os, sys\n"
        "from interformer_fuxi.errors import UserError\n"
        "from interformer_fuxi.models.base import CTRModel\n"
        "real = CTRModel.train_step\n"
        "def train_step(self, *args):\n"
        "    if os.environ['RANK'] == '1' and self._total_steps == 3:\n"
        "        raise UserError('disk quota exceeded while reading a batch')\n"
        "    return real(self, *args)\n"
        "CTRModel.train_step = train_step\n"
        "from interformer_fuxi.runner import main\n"
        "sys.exit(main())\n")
    start = time.time()
    rc, out = finish(torchrun(root / "work", "--nproc_per_node", "2", "--master_port", str(free_port()),
                              script=str(script)), timeout=120)
    assert rc != 0
    assert "error: rank 1: disk quota exceeded while reading a batch" in out
    assert time.time() - start < 100  # rank 0, waiting in a gradient reduction, was stopped
    assert result_lines(root) == []


def test_several_gpu_ids_without_torchrun_say_how_to_launch(tmp_path, capsys, monkeypatch):
    for k in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    from interformer_fuxi.runner import main
    assert main(["--config", str(tmp_path), "--expid", "X", "--gpu", "0", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torchrun --nproc_per_node 2" in err[0]


def test_outside_torchrun_nothing_is_distributed():
    assert not distributed.launched() or "LOCAL_RANK" in os.environ
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.gather_rows(np.arange(3)).tolist() == [0, 1, 2]
    assert distributed.broadcast({"a": 1}) == {"a": 1}


def test_block_data_trains_in_one_process_and_over_two_ranks(tmp_path):
    """``data_block_size``: the build writes ``<split>/part_<k>.h5``, a run reads them with
    FuxiCTR's block loader (one process) or as per-rank block shards (two gloo ranks)."""
    from interformer_fuxi.config import dump_yaml, read_sections
    root = make_project(tmp_path)
    config = root / "config"
    dataset = dict(read_sections(str(config), "dataset_config")["tiny_amazon"], data_block_size=2000)
    model = dict(read_sections(str(config), "model_config")[EXPID], dataset_id="tiny_amazon_blocks",
                 batch_size=128, epochs=5)  # tiny_amazon's signal is learnt by the 4th epoch
    with open(config / "dataset_config.yaml", "a") as f:
        f.write("\n" + dump_yaml({"tiny_amazon_blocks": dataset}))
    with open(config / "model_config.yaml", "a") as f:
        f.write("\n" + dump_yaml({"InterFormer_blocks": model}))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    args = [os.path.join(REPO, "run_expid.py"), "--config", "../config", "--expid", "InterFormer_blocks", "--gpu", "-1"]
    one = subprocess.run([sys.executable, *args], cwd=root / "work", env=env, capture_output=True, text=True,
                         timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    built = root / "data" / "processed" / "tiny_amazon_blocks"
    assert sorted(os.listdir(built / "train")) == ["part_0.h5", "part_1.h5", "part_2.h5"]  # 5,681 rows
    assert "Train samples: total/5681, blocks/3" in one.stderr and "Training finished: 230 steps" in one.stderr  # 16+16+14 batches an epoch
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), *args, "--fresh"], cwd=root / "work", env=env, capture_output=True,
                         text=True, timeout=240)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert "Reusing built data" in two.stdout + two.stderr
    lines = result_lines(root)
    assert len(lines) == 2 and "torchrun" in lines[1]
    assert metrics_of(lines[0], "test")["AUC"] > 0.6 and metrics_of(lines[1], "test")["AUC"] > 0.6
