"""The thin FuxiCTR 2.0 ``BaseModel`` wrapper every model of this package derives from.

It keeps FuxiCTR's training loop (checkpointing, early stopping, lr decay on plateau)
and adds what FuxiCTR 2.0.4 lacks: the NE metric (which needs the training set's mean
CTR), a vectorised gAUC, an evaluation loop without per-batch Python list growth, and a
record of the training: ``fit_history`` (per-epoch wall time with and without the
validation passes, the epoch of the best checkpoint), which benchmarks read.
Speed switches (model-config keys): ``fused_optimizer`` (default true: fused Adam),
``mixed_precision: bf16`` (autocast on CUDA), ``torch_compile`` (default false; true or a
``torch.compile`` mode such as ``reduce-overhead``, CUDA graphs on top); each
batch goes to the device in one non-blocking copy.
"""
import logging
import os
import sys
import time

import torch
from torch import nn
from fuxictr.pytorch.models import BaseModel
from tqdm import tqdm

from .. import metrics as ctr_metrics
from ..cpu_heap import before_workers_fork

# ``torch_compile``: off, on (inductor's default), or one of torch.compile's modes
COMPILE_MODES = (False, None, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CTRModel(BaseModel):
    """FuxiCTR ``BaseModel`` plus NE, fast gAUC and a parameter count that is returned."""

    def __init__(self, feature_map, train_ctr=None, fused_optimizer=True, mixed_precision=None,
                 torch_compile=False, **kwargs):
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
        super().__init__(feature_map, **kwargs)
        self.train_ctr = train_ctr
        self._max_gradient_norm = 10.0  # fit() overrides it; set here so train_step works alone
        self.fit_history = self._new_history()

    @staticmethod
    def _new_history():
        return {"epoch_seconds": [], "eval_seconds": [], "best_epoch": None, "best_monitor": None}

    def compile(self, optimizer, loss, lr):
        """FuxiCTR's optimizer and loss; Adam runs fused (one kernel per tensor, same maths)."""
        super().compile(optimizer, loss, lr)
        if self._fused_optimizer and type(self.optimizer) is torch.optim.Adam:
            self.optimizer = torch.optim.Adam(self.parameters(), lr=lr, fused=True)

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

    def train_step(self, batch_data):
        # One transfer of the whole batch (FuxiCTR moves each feature column on its own).
        batch_data = batch_data.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            return_dict = self.forward(batch_data)
        return_dict["y_pred"] = return_dict["y_pred"].float()  # BCE is not autocast-safe
        loss = self.compute_loss(return_dict, self.get_labels(batch_data))
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), self._max_gradient_norm)
        self.optimizer.step()
        return loss

    def fit(self, data_generator, epochs=1, validation_data=None, max_gradient_norm=10., **kwargs):
        os.makedirs(self.model_dir, exist_ok=True)
        if self.train_ctr is None:
            self.train_ctr = self.label_mean(data_generator)
        self.fit_history = self._new_history()
        return super().fit(data_generator, epochs=epochs, validation_data=validation_data,
                           max_gradient_norm=max_gradient_norm)

    def train_epoch(self, data_generator):
        # times only; FuxiCTR's loop (and its validation passes inside the epoch) runs unchanged
        self._eval_seconds = 0.0
        start = time.perf_counter()
        before_workers_fork(data_generator)
        super().train_epoch(data_generator)
        self.fit_history["epoch_seconds"].append(time.perf_counter() - start)
        self.fit_history["eval_seconds"].append(self._eval_seconds)

    def eval_step(self):
        start = time.perf_counter()
        super().eval_step()
        self._eval_seconds = getattr(self, "_eval_seconds", 0.0) + time.perf_counter() - start

    def checkpoint_and_earlystop(self, logs, min_delta=1e-6):
        super().checkpoint_and_earlystop(logs, min_delta)
        if self._stopping_steps == 0:  # the monitor improved: this evaluation is the best so far
            self.fit_history["best_epoch"] = self._epoch_index + 1
            self.fit_history["best_monitor"] = float(self._monitor.get_value(logs))

    def label_mean(self, data_generator):
        """Mean label of a FuxiCTR data generator (reads the in-memory array when there is one)."""
        label_col = self.feature_map.get_column_index(self.feature_map.labels[0])
        darray = getattr(getattr(data_generator, "dataset", None), "darray", None)
        if darray is not None:
            return float(darray[:, label_col].double().mean())
        total, count = 0.0, 0
        for batch in data_generator:
            total += float(batch[:, label_col].double().sum())
            count += batch.shape[0]
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
