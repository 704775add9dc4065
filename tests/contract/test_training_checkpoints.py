"""Spot checkpoints in the training entry point: one per epoch, and a restarted job resumes from the last one
and ends with the same weights as a job that was never interrupted (a tiny model keeps it fast)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

TRAINING = Path(__file__).resolve().parents[2] / "services" / "training"
sys.path.insert(0, str(TRAINING))
import finetune  # noqa: E402  (services/training is a script folder, not a package)
import train  # noqa: E402


class Tiny(torch.nn.Module):
    """A classifier with the call shape finetune.train uses: model(**batch).loss. Fails on call `fail_at`."""

    def __init__(self, fail_at: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 2)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("spot interruption")
        return SimpleNamespace(loss=torch.nn.functional.cross_entropy(self.linear(x), labels))


def batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(8, 4, generator=g), "labels": torch.randint(0, 2, (8,), generator=g)} for _ in range(3)]


def test_an_interrupted_training_resumes_from_its_last_epoch_and_ends_the_same(tmp_path: Path, capsys):
    uninterrupted = Tiny()
    finetune.train(uninterrupted, batches(), epochs=3, lr=0.05, seed=7)

    with pytest.raises(RuntimeError, match="spot interruption"):  # dies in epoch 3 (calls 7..9)
        finetune.train(Tiny(fail_at=8), batches(), epochs=3, lr=0.05, seed=7, checkpoint_dir=tmp_path,
                       fingerprint={"labels": ["a", "b"]})
    assert (tmp_path / finetune.CHECKPOINT).is_file() and not list(tmp_path.glob("*.partial"))
    capsys.readouterr()

    restarted = Tiny()  # a fresh container: the base model again, then the checkpoint
    finetune.train(restarted, batches(), epochs=3, lr=0.05, seed=7, checkpoint_dir=tmp_path,
                   fingerprint={"labels": ["a", "b"]})
    out = capsys.readouterr().out
    assert "resumed from checkpoint epoch=2" in out
    assert "progress epoch=3/3" in out and "progress epoch=1/3" not in out and "progress epoch=2/3" not in out
    assert restarted.calls == 3  # only epoch 3 ran
    for mine, theirs in zip(restarted.state_dict().values(), uninterrupted.state_dict().values(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)
    assert torch.load(tmp_path / finetune.CHECKPOINT, weights_only=True)["epoch"] == 3


def test_a_checkpoint_of_other_training_is_ignored(tmp_path: Path, capsys):
    finetune.train(Tiny(), batches(), epochs=1, lr=0.05, seed=7, checkpoint_dir=tmp_path, fingerprint={"labels": ["a"]})
    model = Tiny()
    finetune.train(model, batches(), epochs=1, lr=0.05, seed=7, checkpoint_dir=tmp_path,
                   fingerprint={"labels": ["a", "b"]})
    assert "is from other training" in capsys.readouterr().out and model.calls == 3


def test_checkpoints_go_where_sagemaker_syncs_them_or_nowhere(tmp_path: Path, monkeypatch):
    assert train.checkpoint_dir(str(tmp_path)) == tmp_path
    monkeypatch.setattr(train, "OPT_ML", tmp_path / "opt-ml")
    assert train.checkpoint_dir("") is None  # the local launcher: no CheckpointConfig, no checkpoints
    (tmp_path / "opt-ml" / "checkpoints").mkdir(parents=True)
    assert train.checkpoint_dir("") == tmp_path / "opt-ml" / "checkpoints"
    assert train.hyperparameters(["--checkpoint_dir", "/x"])["checkpoint_dir"] == "/x"
