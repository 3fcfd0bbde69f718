"""Scaling out: `trainer.strategy: ddp` with the 4-bit LoRA model, two CPU processes (gloo)."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO


@pytest.mark.slow
def test_ddp_two_processes_train_one_adapter(tiny_llama, raw_items, tmp_path):
    overlay = tmp_path / "ddp.yaml"
    overlay.write_text(
        "trainer:\n"
        "  strategy: ddp\n"
        "  devices: 2\n"
        "  accelerator: cpu\n"
        "  limit_val_batches: 1\n"
        "  logger: false\n"
        "  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {every_n_train_steps: 1, save_last: true, save_top_k: 1}\n"
        "    - class_path: pricer.batch_size.FitBatchSize\n"
        "      init_args: {effective_batch_size: 8, max_val: 4}\n"
        "data:\n  train_size: 32\n  val_size: 4\n  test_size: 4\n  num_proc: 1\n  batch_size: 2\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "PRICER_RUN_NAME")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pricer",
            "fit",
            "--config",
            str(REPO / "configs" / "smoke.yaml"),
            "--config",
            str(overlay),
            "--model.base_model",
            tiny_llama,
            "--model.lora_r",
            "8",
            "--data.source",
            str(raw_items),
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs  # both processes wrote into rank 0's run folder
    run = runs[0]
    # 32 items, batch 2 per process, 2 processes, accumulation 2: 8 per step, 4 steps
    assert "batch size: 2 x 2 accumulation x 2 process(es) = 8 per optimizer step" in result.stdout
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert all("lora_" in k for k in checkpoint["state_dict"])
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "config.yaml").is_file()
