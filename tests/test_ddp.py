"""Scaling out: `trainer.strategy: ddp` with the 4-bit LoRA model, two CPU processes (gloo)."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, cli_args

DDP_TRAINER = "trainer:\n  strategy: ddp\n  devices: 2\n  accelerator: cpu\n"


def ddp_env() -> dict[str, str]:
    """This environment for a DDP command of its own: no rank of an outer run, pricer importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "PRICER_RUN_NAME")}
    return {**env, "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_ddp_two_processes_train_one_adapter(tiny_llama, raw_items, tmp_path):
    overlay = tmp_path / "ddp.yaml"
    overlay.write_text(
        DDP_TRAINER + "  limit_val_batches: 1\n"
        "  logger: false\n"
        "  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {every_n_train_steps: 1, save_last: true, save_top_k: 1}\n"
        "    - class_path: pricer.train.batch_size.FitBatchSize\n"
        "      init_args: {effective_batch_size: 8, max_val: 4}\n"
        "data:\n  train_size: 32\n  val_size: 4\n  test_size: 4\n  num_proc: 1\n  batch_size: 2\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "PRICER_RUN_NAME")}
    result = subprocess.run(
        [sys.executable, "-m", "pricer", "fit", *cli_args(overlay, tiny_llama, raw_items, tmp_path)],
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


# Run as `python launch.py fit ...`: Lightning's DDP launcher starts rank 1 by running the same
# command again, so both processes get these changes. Rank 1 runs out of memory in the backward
# of the last pass of step 0 (where DDP would reduce the gradients), and each rank prints what
# it validated and the LoRA weights it ended with.
LAUNCH = """
import os, sys
import torch
from pricer.train.model import PriceModel

RANK = int(os.environ.get("LOCAL_RANK", "0"))
original = PriceModel.completion_loss
passes = []

def completion_loss(self, input_ids, attention_mask, labels):
    loss, count = original(self, input_ids, attention_mask, labels)
    if self.trainer.training:
        passes.append(self.global_step)
    if RANK == 1 and passes.count(0) == 2 and self.global_step == 0 and not getattr(self, "failed", False):
        self.failed = True
        lora = next(p for n, p in self.named_parameters() if "layers.0." in n and "lora_A" in n)

        def out_of_memory(grad):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated, in backward)")

        self.hook = lora.register_hook(out_of_memory)
    elif getattr(self, "hook", None) is not None and passes.count(0) > 2:
        self.hook.remove()
        self.hook = None
    return loss, count

def on_validation_end(self):
    metrics = self.trainer.callback_metrics
    print(f"rank {RANK} validated val_mae {float(metrics['val_mae']):.6f}", flush=True)

def on_fit_end(self):
    total = sum(float(p.detach().double().abs().sum()) for p in self.parameters() if p.requires_grad)
    print(f"rank {RANK} ended with lora {total:.9f}", flush=True)

PriceModel.completion_loss = completion_loss
PriceModel.on_validation_end = on_validation_end
PriceModel.on_fit_end = on_fit_end

from pricer.cli.main import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_one_rank_out_of_memory_in_backward_repeats_the_step_on_both_and_validation_is_synced(
    tiny_llama, raw_items, tmp_path
):
    """A rank that runs out of memory midway through the backward that reduces gradients left
    the other waiting in the reduction until the process group's 30-minute timeout; here both
    learn of it, repeat the step with smaller passes, and end with the same weights. The
    validation metric that chooses the best weights is the whole split's, on every rank."""
    import re
    import signal

    launch = tmp_path / "launch.py"
    launch.write_text(LAUNCH)
    overlay = tmp_path / "ddp.yaml"
    overlay.write_text(
        DDP_TRAINER + "  max_steps: 2\n"
        "  val_check_interval: 2\n"
        "  limit_val_batches: 1\n"
        "  logger: false\n"
        "  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {monitor: val_mae, save_last: true, save_top_k: 1}\n"
        "    - class_path: pricer.train.batch_size.FitBatchSize\n"
        "      init_args: {effective_batch_size: 8, max_val: 4}\n"
        "model:\n  blend:\n    enabled: false\n    calibrate_interval: false\n"
        "data:\n  train_size: 32\n  val_size: 8\n  test_size: 4\n  num_proc: 1\n  batch_size: 2\n"
    )
    env = ddp_env()
    process = subprocess.Popen(
        [sys.executable, str(launch), "fit", *cli_args(overlay, tiny_llama, raw_items, tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        pytest.fail(f"the two processes hung:\n{out[-3000:]}")
    assert process.returncode == 0, out[-3000:]
    assert "out of GPU memory at global step 0 with 2 items a pass: repeating the step with 1 a pass" in out
    validated = dict(re.findall(r"rank (\d) validated val_mae (\d+\.\d{6})", out))
    assert set(validated) == {"0", "1"} and validated["0"] == validated["1"], out[-2000:]
    ended = dict(re.findall(r"rank (\d) ended with lora (\d+\.\d{9})", out))
    assert set(ended) == {"0", "1"} and ended["0"] == ended["1"], out[-2000:]


# Each rank prints the validation rows its blend was chosen on, and the blend.
BLEND_LAUNCH = """
import os, sys
from pricer.train.end_of_fit import ChooseBlend

RANK = int(os.environ.get("LOCAL_RANK", "0"))
original = ChooseBlend.choose

def choose(self, trainer, pl_module, step):
    original(self, trainer, pl_module, step)
    prices = sorted(round(r["price"], 2) for r in pl_module.validation_rows)
    blend = pl_module.blend
    print(f"rank {RANK} blend on {prices} weight {blend.weight} scale {blend.interval_scale}", flush=True)

ChooseBlend.choose = choose
from pricer.cli.main import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_under_ddp_every_rank_chooses_the_blend_on_the_whole_validation_split(
    tiny_llama, raw_items, tmp_path
):
    """Validation is sharded across the processes, but the blend is chosen on all of it: every
    rank reads the whole split (not the first of its per-rank batch count) and chooses alike."""
    import json
    import re

    launch = tmp_path / "launch.py"
    launch.write_text(BLEND_LAUNCH)
    overlay = tmp_path / "ddp.yaml"
    overlay.write_text(
        DDP_TRAINER + "  max_steps: 2\n"
        "  logger: false\n"
        "  callbacks:\n"
        "    - class_path: pricer.train.batch_size.FitBatchSize\n"
        "      init_args: {effective_batch_size: 8, max_val: 4}\n"
        "data:\n  train_size: 32\n  val_size: 8\n  test_size: 4\n  num_proc: 1\n  batch_size: 2\n"
        "  eval_batch_size: 2\n"
    )
    env = ddp_env()
    result = subprocess.run(
        [sys.executable, str(launch), "fit", *cli_args(overlay, tiny_llama, raw_items, tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = dict(re.findall(r"rank (\d) blend on (\[.*?\] weight \S+ scale \S+)", result.stdout))
    assert set(chosen) == {"0", "1"} and chosen["0"] == chosen["1"], result.stdout[-2000:]
    prices = json.loads(chosen["0"].split(" weight")[0])
    (curated,) = (tmp_path / "cache").rglob("validation-00000-of-00001.parquet")
    import pyarrow.parquet as pq

    assert prices == sorted(round(p, 2) for p in pq.read_table(curated).column("price").to_pylist())
