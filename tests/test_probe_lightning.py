"""The Recorder as a Lightning callback (report 002 trained with Lightning): a real `Trainer.fit` on digits."""

from __future__ import annotations

import json

import pytest
import torch

from fastdiff.doctor import diagnose

pl = pytest.importorskip(
    "pytorch_lightning", reason="Lightning is an optional extra: pip install 'fastdiff[lightning]'"
)
pytest.importorskip("sklearn")

from user_runs import Denoiser, T, digits  # noqa: E402

from fastdiff.probe.lightning import RecorderCallback  # noqa: E402


class Diffusion(pl.LightningModule):
    """An eps-prediction DDPM on digits; `freeze_head` leaves the output layer out of the optimizer."""

    def __init__(self, probe: RecorderCallback, freeze_head: bool = False):
        super().__init__()
        self.net = Denoiser()
        self.probe = probe
        self.freeze_head = freeze_head
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float())

    def training_step(self, batch, batch_idx):
        (x0,) = batch
        noise = torch.randn_like(x0)
        t = torch.randint(0, T, (x0.shape[0],))
        a = self.alphas_cumprod[t].sqrt()[:, None]
        s = (1 - self.alphas_cumprod[t]).sqrt()[:, None]
        x_t = a * x0 + s * noise
        pred = self.net(x_t, t)
        rec = self.probe.recorder
        for name, x in (("x0", x0), ("t", t), ("noise", noise), ("x_t", x_t), ("pred", pred), ("target", noise)):
            rec.log(name, x)
        rec.log_pair("pred~target", pred, noise)
        return torch.nn.functional.mse_loss(pred, noise)

    def configure_optimizers(self):
        params = self.net.body.parameters() if self.freeze_head else self.net.parameters()
        return torch.optim.AdamW(params, lr=2e-3)


def fit(path, steps: int = 60, **kw) -> None:
    torch.manual_seed(0)
    probe = RecorderCallback(path, watch_every=10, flush_every=20)
    data = torch.utils.data.TensorDataset(digits())
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    trainer.fit(Diffusion(probe, **kw), loader)
    assert probe.recorder.closed  # closed when fitting ends: everything is on disk


def test_lightning_fit_is_logged_and_judged(tmp_path):
    path = tmp_path / "run.jsonl"
    fit(path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    losses = [r for r in records if r["name"] == "loss"]
    assert [r["step"] for r in losses] == list(range(60)) and all(r["role"] == "loss" for r in losses)
    assert {r["step"] for r in records if r["name"] == "param/net.head.weight"} == set(range(0, 60, 10))
    report = diagnose(path)
    st = {f.id: f.status for f in report.findings}
    assert not report.failed, report.summary_lines()
    for rule in ("data_normalization", "timestep_distribution", "forward_process", "loss_trend", "params_frozen"):
        assert st[rule] == "ok", report.summary_lines()


def test_lightning_head_left_out_of_the_optimizer(tmp_path):
    path = tmp_path / "run.jsonl"
    fit(path, steps=40, freeze_head=True)
    f = next(f for f in diagnose(path).findings if f.id == "params_frozen")
    assert f.status == "fail" and set(f.evidence["frozen_with_gradients"]) == {"net.head.weight", "net.head.bias"}
