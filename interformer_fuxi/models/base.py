"""The thin FuxiCTR 2.0 ``BaseModel`` wrapper every model of this package derives from.

It keeps FuxiCTR's training loop (checkpointing, early stopping, lr decay on plateau)
and adds what FuxiCTR 2.0.4 lacks: the NE metric (which needs the training set's mean
CTR), a vectorised gAUC, an evaluation loop without per-batch Python list growth, and a
record of the training: ``fit_history`` (per-epoch wall time with and without the
validation passes, the epoch of the best checkpoint), which benchmarks read.
Training survives a kill: the loop (FuxiCTR's, rewritten around :mod:`..training_state`) keeps
a resumable state beside the checkpoint every epoch and every ``checkpoint_steps`` steps,
and ``fit`` resumes from it; checkpoints are written atomically; a non-finite loss or
gradient stops the run with one line (``nonfinite: stop``) or skips the batch
(``nonfinite: skip_batch``).
Speed switches (model-config keys): ``fused_optimizer`` (default true: fused Adam),
``mixed_precision: bf16`` (autocast on CUDA), ``torch_compile`` (default false; true or a
``torch.compile`` mode such as ``reduce-overhead``, CUDA graphs on top); each
batch goes to the device in one non-blocking copy.
``warmup_steps`` (default 0, off; not in FuxiCTR or the paper): the learning rate rises
linearly from lr/W to lr over the first W optimizer steps; FuxiCTR's decay on plateau acts
after them.
"""
import logging
import os
import sys
import time

import numpy as np
import torch
from torch import nn
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import get_optimizer
from tqdm import tqdm

from .. import distributed
from .. import metrics as ctr_metrics
from .. import training_state
from ..cpu_heap import before_workers_fork
from ..errors import UserError

# ``torch_compile``: off, on (inductor's default), or one of torch.compile's modes
COMPILE_MODES = (False, None, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
NONFINITE_MODES = ("stop", "skip_batch")


class CTRModel(BaseModel):
    """FuxiCTR ``BaseModel`` plus NE, fast gAUC and a parameter count that is returned."""

    def __init__(self, feature_map, train_ctr=None, fused_optimizer=True, mixed_precision=None,
                 torch_compile=False, warmup_steps=0, **kwargs):
        kwargs.setdefault("verbose", 0)
        kwargs.setdefault("model_root", "./checkpoints/")
        kwargs.setdefault("metrics", ["AUC", "logloss"])
        if mixed_precision not in (None, "bf16"):
            raise ValueError(f"mixed_precision must be null or bf16, got {mixed_precision!r}")
        if torch_compile not in COMPILE_MODES:
            raise ValueError(f"torch_compile must be one of {', '.join(map(str, COMPILE_MODES))}, "
                             f"got {torch_compile!r}")
        # Set before BaseModel.__init__: a FuxiCTR zoo model calls compile() inside its own __init__.
        self._fused_optimizer = fused_optimizer
        self._mixed_precision = mixed_precision
        self._torch_compile = torch_compile
        if not (isinstance(warmup_steps, int) and not isinstance(warmup_steps, bool) and warmup_steps >= 0):
            raise ValueError(f"warmup_steps must be a whole number of steps >= 0, got {warmup_steps!r}")
        self._warmup_steps = warmup_steps
        super().__init__(feature_map, **kwargs)
        self.train_ctr = train_ctr
        self._max_gradient_norm = 10.0  # fit() overrides these; set here so train_step works alone
        self._nonfinite, self._skipped_batches = "stop", 0
        self._epoch_index = self._batch_index = self._total_steps = self._steps_per_epoch = 0
        self.fit_history = self._new_history()

    @staticmethod
    def _new_history():
        return {"epoch_seconds": [], "eval_seconds": [], "best_epoch": None, "best_monitor": None}

    def compile(self, optimizer, loss, lr):
        """FuxiCTR's optimizer and loss; Adam runs fused (one kernel per tensor, same maths).
        The parameters are ``param_groups(lr)``'s groups (one, unless the model sets its own)."""
        super().compile(optimizer, loss, lr)
        groups = self.param_groups(lr)
        if self._fused_optimizer and type(self.optimizer) is torch.optim.Adam:
            self.optimizer = torch.optim.Adam(groups, lr=lr, fused=True)
        elif len(groups) > 1:
            self.optimizer = get_optimizer(optimizer, groups, lr)
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]  # the rate the warm-up climbs to

    def param_groups(self, lr):
        """The optimizer's parameter groups; a group with its own ``lr`` trains at that rate
        (FuxiCTR's decay on plateau scales every group's rate by the same factor)."""
        return [{"params": list(self.parameters())}]

    def _warm_up(self):
        """During the first ``warmup_steps`` steps: lr = base lr * step / warmup_steps."""
        step = max(self._total_steps, 1)  # train_step called on its own counts as the first
        if step <= self._warmup_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = group["base_lr"] * step / self._warmup_steps

    def model_to_device(self):
        """Every model calls this last in its constructor: the place to compile the forward."""
        super().model_to_device()
        if self._torch_compile:
            mode = None if self._torch_compile is True else self._torch_compile
            self.forward = torch.compile(self.forward, mode=mode)

    def autocast(self):
        """bf16 autocast on CUDA when ``mixed_precision: bf16``; a no-op otherwise."""
        enabled = self._mixed_precision == "bf16" and self.device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)

    def get_inputs(self, inputs, feature_source=None):
        """FuxiCTR's feature dict of a batch tensor; a dict of feature tensors (the serving
        wrapper's named inputs, :mod:`interformer_fuxi.serving`) passes through."""
        if isinstance(inputs, dict):
            return inputs
        return super().get_inputs(inputs, feature_source)

    def predict_batch(self, batch_data):
        """``y_pred [B]`` in float32 for one batch already on the device."""
        with self.autocast():
            return self.forward(batch_data)["y_pred"].float().reshape(-1)

    def train_step(self, batch_data, weight=1.0):
        """One optimizer step; None (nothing applied) for a batch skipped as non-finite.
        ``weight`` scales the loss (a rank's share of a global batch, :mod:`..distributed`)."""
        # One transfer of the whole batch (FuxiCTR moves each feature column on its own).
        batch_data = batch_data.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        ddp = self.__dict__.get("_ddp")  # DDP's forward: gradients averaged over ranks in backward
        with self.autocast():
            return_dict = self.forward(batch_data) if ddp is None else ddp(batch_data)
        return_dict["y_pred"] = return_dict["y_pred"].float()  # BCE is not autocast-safe
        loss = self.compute_loss(return_dict, self.get_labels(batch_data)) * weight
        # under DDP every rank must reach the gradient reduction: a non-finite loss shows there
        # as a non-finite (reduced, so common) gradient norm, decided alike on every rank
        if ddp is None and not torch.isfinite(loss):
            return self._nonfinite_batch("loss")
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.parameters(), self._max_gradient_norm)
        if not torch.isfinite(norm):
            return self._nonfinite_batch("gradient")
        if self._warmup_steps:
            self._warm_up()
        self.optimizer.step()
        return loss

    def _nonfinite_batch(self, what):
        where = (f"epoch {self._epoch_index + 1}, step {self._total_steps}, "
                 f"batch {self._batch_index + 1} of {self._steps_per_epoch}")
        if self._nonfinite == "stop":
            raise UserError(f"non-finite {what} at {where}: training stopped; the last good checkpoint "
                            f"{self.checkpoint} and its resumable state are kept (nonfinite: skip_batch "
                            "skips such batches)")
        self.optimizer.zero_grad(set_to_none=True)
        self._skipped_batches += 1
        logging.warning("Skipped batch (non-finite %s) at %s", what, where)
        return None

    def fit(self, data_generator, epochs=1, validation_data=None, max_gradient_norm=10., resume=True,
            checkpoint_steps=None, nonfinite="stop", **kwargs):
        """FuxiCTR's training loop, resumable. ``resume``: continue from ``<checkpoint>.state``
        when it exists (False: delete it and start over); ``checkpoint_steps``: also keep the
        state every that many steps (default: at the end of every epoch only)."""
        if nonfinite not in NONFINITE_MODES:
            raise UserError(f"nonfinite must be one of {', '.join(NONFINITE_MODES)}, got {nonfinite!r}")
        if checkpoint_steps is not None and (not isinstance(checkpoint_steps, int) or checkpoint_steps < 1):
            raise UserError(f"checkpoint_steps must be a positive integer or null, got {checkpoint_steps!r}")
        try:
            os.makedirs(self.model_dir, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.model_dir}: cannot create the model folder ({exc.strerror or exc})") from None
        self.valid_gen = validation_data
        self._max_gradient_norm = max_gradient_norm
        self._checkpoint_steps, self._nonfinite = checkpoint_steps, nonfinite
        self._steps_per_epoch = len(data_generator)
        if self._eval_steps is None:
            self._eval_steps = self._steps_per_epoch
        self._state_file = training_state.state_path(self.checkpoint)
        self._config = training_state.config_digest(kwargs)
        self._attach_ddp()
        self._best_metric = -np.inf if self._monitor_mode == "max" else np.inf
        self._stopping_steps, self._stop_training = 0, False
        self._total_steps = self._batch_index = self._epoch_index = 0
        self._resume_batch, self._train_loss, self._skipped_batches = 0, 0.0, 0
        self.fit_history = self._new_history()
        if not resume and distributed.is_main():
            training_state.remove(self._state_file)
        distributed.barrier()  # every rank sees the same state file (rank 0 writes and removes it)
        if resume and os.path.exists(self._state_file):
            self._restore(training_state.load(self._state_file, "training state", "delete it or pass --fresh"))
        if self.train_ctr is None:
            self.train_ctr = self.label_mean(data_generator)
        logging.info("Start training: %d batches/epoch", self._steps_per_epoch)
        for epoch in range(self._epoch_index, epochs):
            if self._stop_training:
                break
            self._epoch_index = epoch
            logging.info("************ Epoch=%d start ************", epoch + 1)
            self.train_epoch(data_generator)
            if not self._stop_training:
                logging.info("************ Epoch=%d end ************", epoch + 1)
        logging.info("Training finished: %d steps", self._total_steps)
        if self._skipped_batches:
            logging.warning("Skipped %d batch(es) with a non-finite loss or gradient", self._skipped_batches)
        logging.info("Load best model: %s", self.checkpoint)
        if distributed.is_main():
            self.load_weights(self.checkpoint)
        distributed.broadcast_module(self)  # other ranks need no access to rank 0's files
        if distributed.is_main():
            training_state.remove(self._state_file)  # finished: the same command trains afresh, as FuxiCTR's
        self.__dict__.pop("_ddp", None)

    def _attach_ddp(self):
        """Under torchrun, a DDP wrapper for the training forward (kept out of the module tree:
        the checkpoint stays this model's ``state_dict``). DDP copies rank 0's parameters."""
        if not distributed.active():
            return
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.__dict__["_ddp"] = DistributedDataParallel(self, device_ids=ids)

    def train_epoch(self, data_generator):
        self._eval_seconds = 0.0
        start = time.perf_counter()
        self.train()
        before_workers_fork(data_generator)
        if hasattr(data_generator, "set_epoch"):  # a rank's shard: its order is drawn from seed + epoch
            data_generator.set_epoch(self._epoch_index)
        skip = self._resume_batch
        if skip:  # the interrupted epoch: its shuffled order again, then the state of the moment
            training_state.set_rng_states(self._epoch_rng)
        else:  # the order of this epoch is drawn from them (torch's sampler; numpy's for H5 blocks)
            self._epoch_rng = training_state.rng_states()
        batches = iter(data_generator)
        for _ in range(skip):
            next(batches)
        if skip:
            training_state.set_rng_states(self._resume_rng)
            self._resume_batch = 0
        if self._verbose > 0:
            batches = tqdm(batches, total=self._steps_per_epoch, initial=skip, disable=False, file=sys.stdout)
        for batch_index, batch_data in enumerate(batches, start=skip):
            self._batch_index = batch_index
            self._total_steps += 1
            # a rank's shard yields (batch, loss weight); FuxiCTR's loaders yield the batch
            loss = self.train_step(*batch_data) if isinstance(batch_data, tuple) else self.train_step(batch_data)
            if loss is not None:
                self._train_loss += loss.item()
            if self._total_steps % self._eval_steps == 0:
                loss_sum, = distributed.all_sum([self._train_loss])  # weighted: sums to world * mean
                logging.info("Train loss: %.6f", loss_sum / distributed.world_size() / self._eval_steps)
                self._train_loss = 0.0
                self.eval_step()
            if self._stop_training:
                break
            if (self._checkpoint_steps and self._total_steps % self._checkpoint_steps == 0
                    and batch_index + 1 < self._steps_per_epoch):
                self._save_state(self._epoch_index, batch_index + 1)
        seconds = time.perf_counter() - start
        self.fit_history["epoch_seconds"].append(seconds)
        self.fit_history["eval_seconds"].append(self._eval_seconds)
        rows = getattr(data_generator, "num_samples", None)  # all ranks' rows under DDP
        whole = not skip and self._batch_index + 1 == self._steps_per_epoch
        if rows and whole and seconds > self._eval_seconds:
            logging.info("Epoch %d trained %d samples in %.1f s: %.0f samples/s (evaluation excluded)",
                         self._epoch_index + 1, rows, seconds - self._eval_seconds,
                         rows / (seconds - self._eval_seconds))
        self._save_state(self._epoch_index + 1, 0)

    def _save_state(self, epoch, batch):
        """The resumable state, to go on at ``batch`` of ``epoch`` (0-based); rank 0's under DDP."""
        if not distributed.is_main():
            return
        state = {"format": training_state.FORMAT, "config": self._config, "epoch": epoch, "batch": batch,
                 "total_steps": self._total_steps, "train_loss": self._train_loss,
                 "best_metric": self._best_metric, "stopping_steps": self._stopping_steps,
                 "stop_training": self._stop_training, "skipped_batches": self._skipped_batches,
                 "train_ctr": self.train_ctr, "fit_history": self.fit_history,
                 "model": self.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "epoch_rng": self._epoch_rng, "rng": training_state.rng_states()}
        training_state.atomic_save(state, self._state_file, "resumable training state")

    def _restore(self, state):
        if state.get("format") != training_state.FORMAT or state.get("config") != self._config:
            raise UserError(f"{self._state_file}: a resumable state of other settings (or another version); "
                            "pass --fresh to start over, or delete it")
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._epoch_index, self._resume_batch = state["epoch"], state["batch"]
        self._total_steps, self._train_loss = state["total_steps"], state["train_loss"]
        self._best_metric, self._stopping_steps = state["best_metric"], state["stopping_steps"]
        self._stop_training, self._skipped_batches = state["stop_training"], state["skipped_batches"]
        self.train_ctr, self.fit_history = state["train_ctr"], state["fit_history"]
        self._epoch_rng, self._resume_rng = state["epoch_rng"], state["rng"]
        if not self._resume_batch:
            training_state.set_rng_states(self._resume_rng)
        logging.info("Resuming from %s: epoch %d, batch %d of %d (step %d); --fresh starts over",
                     self._state_file, self._epoch_index + 1, self._resume_batch, self._steps_per_epoch,
                     self._total_steps)

    def eval_step(self):
        start = time.perf_counter()
        super().eval_step()
        self._eval_seconds = getattr(self, "_eval_seconds", 0.0) + time.perf_counter() - start

    def checkpoint_and_earlystop(self, logs, min_delta=1e-6):
        super().checkpoint_and_earlystop(logs, min_delta)
        if self._stopping_steps == 0:  # the monitor improved: this evaluation is the best so far
            self.fit_history["best_epoch"] = self._epoch_index + 1
            self.fit_history["best_monitor"] = float(self._monitor.get_value(logs))

    def save_weights(self, checkpoint):
        """FuxiCTR's checkpoint (a ``state_dict``), written atomically: a kill mid-write leaves the old one.
        Under DDP the ranks hold the same parameters: rank 0 writes."""
        if distributed.is_main():
            training_state.atomic_save(self.state_dict(), checkpoint, "checkpoint")

    def load_weights(self, checkpoint):
        self.to(self.device)
        self.load_state_dict(training_state.load(checkpoint, "checkpoint", "delete it and train again"))

    def label_mean(self, data_generator):
        """Mean label of a training split (reads the in-memory array when there is one)."""
        label_col = self.feature_map.get_column_index(self.feature_map.labels[0])
        darray = getattr(getattr(data_generator, "dataset", data_generator), "darray", None)
        if darray is not None:
            return float(darray[:, label_col].double().mean())
        total, count = 0.0, 0
        for batch in data_generator:
            batch, weight = batch if isinstance(batch, tuple) else (batch, 1.0)  # a rank's shard
            if weight:  # (a weight-0 batch is a placeholder row)
                total += float(batch[:, label_col].double().sum())
                count += batch.shape[0]
        total, count = distributed.all_sum([total, count])  # one rank's shard holds only its rows
        return total / max(count, 1)

    def evaluate(self, data_generator, metrics=None):
        self.eval()
        y_pred, y_true, group_id = [], [], []
        before_workers_fork(data_generator)
        with torch.no_grad():
            batches = tqdm(data_generator, file=sys.stdout) if self._verbose > 0 else data_generator
            for batch_data in batches:
                y_pred.append(self.predict_batch(batch_data.to(self.device, non_blocking=True)).cpu())
                y_true.append(self.get_labels(batch_data).reshape(-1).cpu())
                if self.feature_map.group_id is not None:
                    group_id.append(self.get_group_id(batch_data).reshape(-1))
        y_pred = torch.cat(y_pred).double().numpy()
        y_true = torch.cat(y_true).double().numpy()
        group_id = torch.cat(group_id).numpy() if group_id else None
        if distributed.active():  # every rank scored a slice: rank 0 decides, all ranks act alike
            y_pred, y_true = distributed.gather_rows(y_pred), distributed.gather_rows(y_true)
            group_id = None if group_id is None else distributed.gather_rows(group_id)
            val_logs = distributed.broadcast(self.evaluate_metrics(
                y_true, y_pred, metrics or self.validation_metrics, group_id) if distributed.is_main() else None)
            logging.info("[Metrics] " + " - ".join(f"{k}: {v:.6f}" for k, v in val_logs.items()))
            return val_logs
        val_logs = self.evaluate_metrics(y_true, y_pred, metrics or self.validation_metrics, group_id)
        logging.info("[Metrics] " + " - ".join(f"{k}: {v:.6f}" for k, v in val_logs.items()))
        return val_logs

    def predict(self, data_generator):
        self.eval()
        before_workers_fork(data_generator)
        with torch.no_grad():
            preds = [self.predict_batch(b.to(self.device, non_blocking=True)).cpu() for b in data_generator]
        return torch.cat(preds).double().numpy()

    def evaluate_metrics(self, y_true, y_pred, metrics, group_id=None):
        return ctr_metrics.evaluate_metrics(y_true, y_pred, metrics, group_id, self.train_ctr)

    def count_parameters(self, count_embedding=True):
        total = sum(p.numel() for name, p in self.named_parameters()
                    if p.requires_grad and (count_embedding or "embedding" not in name))
        logging.info("Total number of parameters: {}.".format(total))
        return total
