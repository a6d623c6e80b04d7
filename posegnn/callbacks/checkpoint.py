"""The run's settings in every checkpoint (what a resume is checked against), and a
ModelCheckpoint that follows a moved run folder."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from posegnn.checkpoints import RUN_SETTINGS

if TYPE_CHECKING:
    from posegnn.data.datamodule import DataConfig
    from posegnn.data.graph import GraphConfig



class RunSettings(L.Callback):
    """Store the run's data and graph settings in every checkpoint (as plain values, for
    ``weights_only`` loading), so that a resume can refuse other data, naming what
    differs."""

    def __init__(self, data: DataConfig, graph: GraphConfig) -> None:
        self.settings = {"data": asdict(data), "graph": asdict(graph)}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict) -> None:
        checkpoint[RUN_SETTINGS] = self.settings


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, which a resumed run also uses in a run folder that was
    moved or copied since: the stored best, top-k and last paths are moved along with it
    (Lightning would drop them and write ``last-v1.ckpt`` beside ``last.ckpt``). And
    ``last.ckpt`` is the last epoch: Lightning 2.6 rewrites it only at a step that also
    saved a best checkpoint, so after the best epoch it stayed a copy of the best."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @property
    def state_key(self) -> str:  # the key plain ModelCheckpoint uses, for older checkpoints
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            def moved(value):
                if isinstance(value, str) and value and Path(value).parent == Path(old):
                    return str(Path(self.dirpath) / Path(value).name)
                return value

            state_dict = {k: ({moved(p): s for p, s in v.items()} if isinstance(v, dict)
                              else moved(v)) for k, v in state_dict.items()}
            state_dict["dirpath"] = self.dirpath
        super().load_state_dict(state_dict)
