"""A Lightning callback that runs a `fastdiff.Recorder` through `Trainer.fit` (report 002 trained with Lightning).

    from fastdiff.probe.lightning import RecorderCallback

    probe = RecorderCallback("run.jsonl", watch_every=50)
    trainer = Trainer(callbacks=[probe], ...)

    class Diffusion(LightningModule):
        def training_step(self, batch, batch_idx):
            ...
            rec = probe.recorder              # the Recorder, open while fitting
            rec.log("x0", x0); rec.log("t", t); rec.log("x_t", x_t)
            rec.log("pred", pred); rec.log("target", target)
            return loss                       # logged as "loss" (role loss) by the callback

The callback opens the Recorder when fitting starts (after Lightning set up torch.distributed, so records
merge across ranks), watches the LightningModule's parameters, gradients and updates every `watch_every`
steps (right after each optimizer step), logs the loss that `training_step` returns, advances the
Recorder's step after every training batch, and closes it when fitting ends (also on an exception), so
`fastdiff doctor run.jsonl` reads the run as it reads any other. Nothing is synchronised with the host.

It subclasses the `Callback` of each Lightning package installed (`lightning.pytorch` and
`pytorch_lightning`), so either package's Trainer accepts it. Install: pip install "fastdiff[lightning]".
"""

from __future__ import annotations

import os

import torch

from .recorder import Recorder


def _callback_bases() -> tuple[type, ...]:
    bases = []
    try:
        from lightning.pytorch import Callback as LightningCallback

        bases.append(LightningCallback)
    except ImportError:
        pass
    try:
        from pytorch_lightning import Callback as PLCallback

        if PLCallback not in bases:
            bases.append(PLCallback)
    except ImportError:
        pass
    if not bases:
        raise ImportError(
            "fastdiff.probe.lightning needs Lightning: pip install 'fastdiff[lightning]' (or pytorch-lightning)"
        )
    return tuple(bases)


def _loss_of(outputs) -> torch.Tensor | None:
    """The loss `training_step` returned: a tensor, or a dict with a "loss" entry."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), torch.Tensor):
        return outputs["loss"]
    return None


class _RecorderCallback:
    """Runs a `fastdiff.Recorder` through `Trainer.fit` (module docstring).

    Args:
        path: the JSONL log (like `Recorder(path)`); `recorder_kwargs` go to the Recorder (sinks, flush_every...).
        watch_every: watch the module's parameters / gradients / updates every this many steps (0: no watch).
        log_loss: log the loss `training_step` returns as scalar "loss".
    """

    def __init__(self, path: str | os.PathLike, *, watch_every: int = 100, log_loss: bool = True, **recorder_kwargs):
        super().__init__()
        self.path = path
        self.watch_every = watch_every
        self.log_loss = log_loss
        self.recorder_kwargs = recorder_kwargs
        self.recorder: Recorder | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.recorder = Recorder(self.path, **self.recorder_kwargs)
        if self.watch_every:
            self.recorder.watch(pl_module, every=self.watch_every)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.recorder is None or self.recorder.closed:
            return
        loss = _loss_of(outputs) if self.log_loss else None
        if loss is not None:
            self.recorder.log_scalar("loss", loss.detach(), role="loss")
        self.recorder.step()

    def _close(self) -> None:
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.close()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()


RecorderCallback = type(
    "RecorderCallback", (_RecorderCallback, *_callback_bases()), {"__doc__": _RecorderCallback.__doc__}
)
RecorderCallback.__module__ = __name__

__all__ = ["RecorderCallback"]
