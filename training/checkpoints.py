"""Checkpoints and early stopping: the validation-AUROC monitor, its state, and the
per-epoch checkpoints in the store that let a retried train task resume where it
stopped (state, not committed artifacts). Research use only, not a diagnostic device.
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from melanoma.run import Run
from melanoma.store import sha256_hex

log = logging.getLogger(__name__)


@dataclass
class MonitorState:
    """Where early stopping stands: the best AUROC so far, its epoch and weights, and how
    many epochs since. A phase resumed after a crash carries it on from its checkpoint."""

    best: float = -np.inf
    best_epoch: int = -1
    wait: int = 0
    best_weights: list[np.ndarray] | None = None


class ValidationAUROC(keras.callbacks.Callback):
    """Validation AUROC each epoch, early stopping on it, best weights restored at the end.

    Also checkpoints to the store after every epoch, so a retried task resumes. With
    ``baseline`` (the AUROC of the weights the phase starts from), the phase must beat
    it: fine-tuning that never does leaves the starting weights in place (best_epoch -1).
    ``resumed`` carries a crashed attempt's state on.
    """

    def __init__(
        self,
        predict,
        labels: np.ndarray,
        patience: int,
        checkpoint=None,
        baseline: float | None = None,
        resumed: MonitorState | None = None,
    ):
        super().__init__()
        self.predict, self.labels, self.patience, self.checkpoint = (
            predict,
            labels,
            patience,
            checkpoint,
        )
        self.state = resumed or MonitorState(-np.inf if baseline is None else baseline)

    @property
    def best_epoch(self) -> int:
        return self.state.best_epoch

    def on_train_begin(self, logs=None):
        if np.isfinite(self.state.best) and self.state.best_weights is None:
            self.state.best_weights = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        auroc = float(roc_auc_score(self.labels, self.predict()))
        if logs is not None:
            logs["val_auroc"] = auroc
        state = self.state
        if auroc > state.best:
            state.best, state.best_epoch, state.best_weights, state.wait = (
                auroc,
                epoch,
                self.model.get_weights(),
                0,
            )
        else:
            state.wait += 1
            if state.wait >= self.patience:
                self.model.stop_training = True
        if self.checkpoint:
            self.checkpoint(epoch, logs or {}, state)

    def on_train_end(self, logs=None):
        if self.state.best_weights is not None:
            self.model.set_weights(self.state.best_weights)


class StoreCheckpoints:
    """Per-phase checkpoints in the store, written after each epoch: the last weights (to
    go on from), the best weights (to restore at the end) and a JSON state, written last,
    with the weights' sha256. A crash between the writes leaves weights that the state
    does not describe; the phase then starts over rather than mix two epochs."""

    def __init__(self, run: Run, model: keras.Model):
        self.store, self.layout, self.model = run.store, run.layout, model

    def _put_weights(self, key: str) -> str:
        """Store the model's weights at ``key``; return their sha256."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.weights.h5"
            self.model.save_weights(path)
            self.store.put_file(key, path)
            return sha256_hex(path.read_bytes())

    def _get_weights(self, key: str, sha256: str | None) -> bool:
        """Load the weights at ``key`` into the model if they are the ones recorded."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.weights.h5"
            self.store.get_file(key, path)
            if sha256 and sha256_hex(path.read_bytes()) != sha256:
                return False
            optimizer = getattr(self.model, "optimizer", None)
            if optimizer is not None and not optimizer.built:
                # Built, its Adam moments are restored too: the phase goes on, not restarts.
                optimizer.build(self.model.trainable_variables)
            self.model.load_weights(path)
            return True

    def _put_arrays(self, key: str, arrays: list[np.ndarray]) -> str:
        """The monitor's best weights, as arrays: they may be a head model's, not the model's."""
        buffer = io.BytesIO()
        np.savez(buffer, *arrays)
        self.store.put_bytes(key, buffer.getvalue())
        return sha256_hex(buffer.getvalue())

    def _get_arrays(self, key: str, sha256: str) -> list[np.ndarray] | None:
        data = self.store.get_bytes(key)
        if sha256_hex(data) != sha256:
            return None
        with np.load(io.BytesIO(data)) as arrays:
            return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]

    def saver(self, phase: str, history: dict[str, list[float]]):
        weights_key, best_key, state_key = self.layout.checkpoint(phase)
        best_sha256: str | None = None

        def save(epoch: int, logs: dict[str, float], monitor: MonitorState) -> None:
            nonlocal best_sha256
            for name, value in logs.items():
                history.setdefault(name, []).append(float(value))
            weights_sha256 = self._put_weights(weights_key)
            if monitor.best_weights is not None and (
                monitor.best_epoch == epoch or best_sha256 is None
            ):
                best_sha256 = self._put_arrays(best_key, monitor.best_weights)
            self.store.put_json(
                state_key,
                {
                    "phase": phase,
                    "epoch": epoch,
                    "complete": False,
                    "history": history,
                    "weights_sha256": weights_sha256,
                    "best": monitor.best if np.isfinite(monitor.best) else None,
                    "best_epoch": monitor.best_epoch,
                    "wait": monitor.wait,
                    "best_sha256": best_sha256,
                },
            )

        return save

    def mark_complete(self, phase: str, history: dict[str, list[float]], best_epoch: int) -> None:
        weights_key, _, state_key = self.layout.checkpoint(phase)
        weights_sha256 = self._put_weights(weights_key)
        self.store.put_json(
            state_key,
            {
                "phase": phase,
                "complete": True,
                "best_epoch": best_epoch,
                "history": history,
                "weights_sha256": weights_sha256,
            },
        )

    def resume(self, phase: str) -> tuple[dict[str, Any], MonitorState | None] | None:
        """Load a phase's checkpoint into the model; return its state and, for a phase
        cut short, its early-stopping state. None if there is no usable checkpoint."""
        weights_key, best_key, state_key = self.layout.checkpoint(phase)
        if not self.store.exists(state_key):
            return None
        state = self.store.get_json(state_key)
        monitor = None
        # A checkpoint from before best weights were kept carries no early-stopping
        # state: the phase goes on from its last epoch with a fresh one.
        if not state["complete"] and state.get("best_sha256"):
            best_weights = self._get_arrays(best_key, state["best_sha256"])
            if best_weights is None:
                log.warning("%s: best weights differ from the state's; starting over", phase)
                return None
            monitor = MonitorState(
                state["best"] if state.get("best") is not None else -np.inf,
                state.get("best_epoch", -1),
                state.get("wait", 0),
                best_weights,
            )
        before = self.model.get_weights()
        if not self._get_weights(weights_key, state.get("weights_sha256")):
            log.warning("%s: checkpoint weights differ from its state; starting over", phase)
            self.model.set_weights(before)
            return None
        log.info(
            "resuming %s from its checkpoint (epoch %s, complete=%s)",
            phase,
            state.get("epoch"),
            state["complete"],
        )
        return state, monitor
