"""Training: tiny runs of the real command, resume, the schedule, and two-process DDP on gloo."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from musebridge.export.checkpoint import load_checkpoint
from musebridge.export.config import PRESETS, TrainConfig
from musebridge.export.train import Trainer, lr_at
from synth_corpus import write_corpus

from musebridge.commands import train as train_cli
from tests.net import free_port

TINY = ["--config", "tiny", "--batch-size", "4", "--eval-windows", "8", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, (16, 4, 4), n_notes=16)
    return root


def train(corpus, out, *extra):
    return train_cli.main([*TINY, "--data", str(corpus), "--out", str(out), *extra])


def test_train_writes_checkpoints_curve_and_history(corpus, tmp_path):
    assert train(corpus, tmp_path, "--max-steps", "12", "--eval-interval", "6", "--warmup-steps", "2",
                 "--lr", "3e-3") == 0
    assert {"latest.pt", "best.pt", "loss.png", "history.json"} <= set(os.listdir(tmp_path))
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["step"] for h in history] == [6, 12]
    assert history[-1]["tokens"] == 12 * 4 * PRESETS["tiny"].block_size
    model, state = load_checkpoint(tmp_path / "latest.pt")
    assert model.config == PRESETS["tiny"]
    assert state["train"]["state"]["step"] == 12 and "optimizer" in state
    assert state["data"]["train_pieces"] == 16 and set(state["data"]["styles"]) == {"bach", "folk",
                                                                                    "classical", "renaissance"}
    assert history[-1]["val_loss"] < history[0]["val_loss"] < 8.09  # log(vocab) = 8.09 nats: it learns


def test_resume_continues_exactly(corpus, tmp_path):
    """With a flat schedule (lr = min-lr), 5 steps + resume to 10 equals 10 straight steps, bit for bit: the
    batches are a function of the step, and the optimizer state travels in latest.pt."""
    flat = ["--lr", "1e-3", "--min-lr", "1e-3", "--warmup-steps", "1", "--eval-interval", "5"]
    assert train(corpus, tmp_path / "straight", "--max-steps", "10", *flat) == 0
    assert train(corpus, tmp_path / "cut", "--max-steps", "5", *flat) == 0
    assert train(corpus, tmp_path / "cut", "--max-steps", "10", "--resume", *flat) == 0
    straight, _ = load_checkpoint(tmp_path / "straight" / "latest.pt")
    resumed, state = load_checkpoint(tmp_path / "cut" / "latest.pt")
    assert state["train"]["state"]["step"] == 10
    assert [h["step"] for h in json.loads((tmp_path / "cut" / "history.json").read_text())] == [5, 10]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_resume_without_checkpoint_is_one_clear_line(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path, "--max-steps", "2", "--resume") == 1
    assert "nothing to resume" in capsys.readouterr().err


def test_missing_corpus_is_one_clear_line(tmp_path, capsys):
    assert train(tmp_path / "nowhere", tmp_path / "out", "--max-steps", "2") == 1
    assert "musebridge corpus build" in capsys.readouterr().err


def test_time_budget_stops_and_still_saves(corpus, tmp_path):
    assert train(corpus, tmp_path, "--max-steps", "100000", "--minutes", "0.0001") == 0
    _, state = load_checkpoint(tmp_path / "latest.pt")
    assert state["train"]["state"]["step"] < 100000


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100)
    warm = [lr_at(0.0, s, cfg) for s in range(10)]
    assert warm == sorted(warm) and warm[-1] == pytest.approx(1e-3)
    decay = [lr_at(p / 10, 10 + p, cfg) for p in range(11)]
    assert decay == sorted(decay, reverse=True)
    assert decay[0] == pytest.approx(1e-3) and decay[-1] == pytest.approx(1e-4)


def _ddp_worker(rank: int, world: int, port: int, corpus: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    cfg = TrainConfig(data=corpus, out=out, batch_size=2, max_steps=6, eval_interval=3, eval_windows=4,
                      warmup_steps=2, device="cpu", threads=1, progress=False)
    trainer = Trainer(PRESETS["tiny"], cfg)
    try:
        assert trainer.ddp.world == world and trainer.ddp.rank == rank
        trainer.run()
        torch.save(trainer.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        trainer.close()


def test_ddp_two_cpu_processes_on_gloo_agree(corpus, tmp_path):
    # The port is free when chosen but another process may take it before rank 0 listens on it: only that
    # failure gets a fresh port and another try.
    for attempt in range(3):
        try:
            mp.spawn(_ddp_worker, args=(2, free_port(), str(corpus), str(tmp_path)), nprocs=2, join=True)
            break
        except mp.ProcessRaisedException as e:
            if "EADDRINUSE" not in str(e) or attempt == 2:
                raise
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    _, state = load_checkpoint(tmp_path / "latest.pt")
    assert state["train"]["world"] == 2
    assert state["train"]["state"]["tokens"] == 6 * 2 * 2 * PRESETS["tiny"].block_size
    assert not any(torch.equal(w0[n], p) for n, p in _fresh_tiny().items() if p.dim() >= 2)


def _fresh_tiny() -> dict:
    from musebridge.export.model import GPT

    torch.manual_seed(TrainConfig().seed)
    return GPT(PRESETS["tiny"]).state_dict()


def test_init_starts_a_new_run_from_an_exported_model(corpus, tmp_path):
    """`--init model.onnx` starts at step 0 from the file's weights (at learning rate 0 they come out as they
    went in); with --resume it starts from them once and resumes its own checkpoint after that."""
    from musebridge.export.onnx_export import export_model

    assert train(corpus, tmp_path / "a", "--max-steps", "6", "--eval-interval", "6") == 0
    trained, state = load_checkpoint(tmp_path / "a" / "latest.pt")
    export_model(trained, state, tmp_path / "a.onnx")
    frozen = ["--lr", "0", "--min-lr", "0", "--warmup-steps", "1", "--eval-interval", "2"]
    init = ["--init", str(tmp_path / "a.onnx"), "--resume", *frozen]
    assert train(corpus, tmp_path / "b", "--max-steps", "2", *init) == 0
    tuned, state = load_checkpoint(tmp_path / "b" / "latest.pt")
    assert state["train"]["state"]["step"] == 2 and state["train"]["config"]["init"] == str(tmp_path / "a.onnx")
    assert torch.allclose(tuned.token_table(), trained.token_table(), atol=1e-6)
    assert torch.equal(tuned.state_dict()["blocks.0.mlp.0.weight"], trained.state_dict()["blocks.0.mlp.0.weight"])
    assert train(corpus, tmp_path / "b", "--max-steps", "4", *init) == 0  # resumes b, not a fresh start
    assert [h["step"] for h in json.loads((tmp_path / "b" / "history.json").read_text())] == [2, 4]


def test_a_model_started_from_another_carries_its_stages(corpus, tmp_path):
    """Each `--init` run records the runs its weights came from, oldest first (their config and history), through
    checkpoints, --resume and exported files, so the last file says how all of its weights were trained."""
    from musebridge.export.onnx_export import export_model
    from musebridge.export.train import whole_history

    assert train(corpus, tmp_path / "a", "--max-steps", "4", "--eval-interval", "2") == 0
    export_model(*load_checkpoint(tmp_path / "a" / "latest.pt"), tmp_path / "a.onnx")
    b = ("--eval-interval", "2", "--init", str(tmp_path / "a.onnx"), "--resume", "--lr", "7e-4")
    assert train(corpus, tmp_path / "b", "--max-steps", "2", *b) == 0
    assert train(corpus, tmp_path / "b", "--max-steps", "4", *b) == 0  # resumed: still one stage before it
    assert train(corpus, tmp_path / "c", "--max-steps", "2", "--eval-interval", "2",
                 "--init", str(tmp_path / "b" / "latest.pt")) == 0
    _, state = load_checkpoint(tmp_path / "c" / "latest.pt")
    stages = state["train"]["stages"]
    assert [s["config"]["out"] for s in stages] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert [s["state"]["step"] for s in stages] == [4, 4] and stages[1]["config"]["lr"] == 7e-4
    assert [h["step"] for h in whole_history(stages, state["train"]["state"]["history"])] == [2, 4, 6, 8, 10]


def test_a_model_trained_with_style_drop_takes_style_guidance(corpus, tmp_path):
    """--style-drop reaches the exported file's training config, which is what the engine checks before it
    builds the second (unconditional) stream of style guidance."""
    from musebridge.engine.errors import EngineError
    from musebridge.engine.inference.guidance import GuidedCache
    from musebridge.engine.sessions.session import Engine
    from musebridge.engine.sessions.session_config import SessionConfig
    from musebridge.export.onnx_export import export_model

    for drop in ("0.3", "0"):
        run = ("--max-steps", "2", "--eval-interval", "2", "--style-drop", drop)
        assert train(corpus, tmp_path / drop, *run) == 0
        export_model(*load_checkpoint(tmp_path / drop / "latest.pt"), tmp_path / f"{drop}.onnx")
    guided = SessionConfig(style="bach", style_guidance=2.0)
    assert isinstance(Engine.load(tmp_path / "0.3.onnx").new_session(guided).cache, GuidedCache)
    with pytest.raises(EngineError, match="--style-drop"):
        Engine.load(tmp_path / "0.onnx").new_session(guided)
