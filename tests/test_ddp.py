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


# Each process prints every step's loss, the completion tokens of its own items, and the LoRA
# weights it ended with.
STEP_LAUNCH = """
import os, sys
from pricer.train.model import PriceModel

RANK = int(os.environ.get("LOCAL_RANK", "0"))
original = PriceModel.accumulate_gradients

def accumulate_gradients(self, batch, *args, **kwargs):
    loss = original(self, batch, *args, **kwargs)
    targets = int((batch["labels"][:, 1:] != -100).sum())
    print(f"rank {RANK} step {self.global_step} loss {float(loss)!r} over {targets}", flush=True)
    return loss

def on_fit_end(self):
    total = sum(float(p.detach().double().abs().sum()) for p in self.parameters() if p.requires_grad)
    print(f"rank {RANK} ended with lora {total!r}", flush=True)

PriceModel.accumulate_gradients = accumulate_gradients
PriceModel.on_fit_end = on_fit_end
from pricer.cli.main import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_two_processes_train_the_adapter_one_process_trains(tiny_llama, tmp_path):
    """DDP is one process's training split over two: on the same 8 items a step (the whole
    train split, so the order cannot differ), without dropout, both ranks end with the same
    weights, each rank's step loss is one process's, and so is the adapter, though the ranks' items hold different numbers of price tokens ($3 against $678)."""
    import re

    from safetensors.torch import load_file

    from tests.conftest import record, write_raw

    prices = [3.0, 678.0, 45.0, 9.0, 512.0, 27.0, 130.0, 6.0]
    source = tmp_path / "source"
    write_raw(source, "Appliances", [record(f"Fridge model {i}", prices[i % 8] + i // 8) for i in range(24)])

    launch = tmp_path / "launch.py"
    launch.write_text(STEP_LAUNCH)
    common = (
        "  max_steps: 3\n"
        "  max_epochs: 3\n"
        "  limit_val_batches: 1\n"
        "  logger: false\n"
        "  callbacks:\n"
        "    - class_path: pricer.train.batch_size.FitBatchSize\n"
        "      init_args: {effective_batch_size: 8, max_val: 2}\n"
        "model:\n  lora:\n    dropout: 0.0\n  blend:\n    enabled: false\n    calibrate_interval: false\n"
        "data:\n  train_size: 8\n  val_size: 4\n  test_size: 4\n  num_proc: 1\n  batch_size: 2\n"
    )
    outputs, adapters = {}, {}
    for name, trainer in (("ddp", DDP_TRAINER), ("one", "trainer:\n  accelerator: cpu\n")):
        root = tmp_path / name
        root.mkdir()
        overlay = root / "overlay.yaml"
        overlay.write_text(trainer + common)
        result = subprocess.run(
            [sys.executable, str(launch), "fit", *cli_args(overlay, tiny_llama, source, root)],
            capture_output=True,
            text=True,
            timeout=600,
            env=ddp_env(),
            cwd=root,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = result.stdout
        (run,) = (root / "runs").iterdir()
        adapters[name] = load_file(run / "adapter" / "adapter_model.safetensors")

    def steps(out: str) -> dict[tuple[str, int], tuple[float, int]]:
        found = re.findall(r"rank (\d) step (\d+) loss (\S+) over (\d+)", out)
        return {(rank, int(step)): (float(loss), int(n)) for rank, step, loss, n in found}

    ddp, one = steps(outputs["ddp"]), steps(outputs["one"])
    assert sorted(one) == [("0", 0), ("0", 1), ("0", 2)], outputs["one"][-2000:]
    assert sorted(ddp) == [(r, s) for r in "01" for s in range(3)], outputs["ddp"][-2000:]
    assert any(ddp[("0", s)][1] != ddp[("1", s)][1] for s in range(3))  # the ranks' tokens differ
    for step in range(3):  # each rank's step loss is the whole step's, one process's
        (l0, n0), (l1, n1) = ddp[("0", step)], ddp[("1", step)]
        loss, n = one[("0", step)]
        assert n0 + n1 == n
        assert l0 == l1 and l0 == pytest.approx(loss, rel=1e-5), step
    ended = dict(re.findall(r"rank (\d) ended with lora (\S+)", outputs["ddp"]))
    assert set(ended) == {"0", "1"} and ended["0"] == ended["1"], outputs["ddp"][-2000:]
    assert adapters["ddp"].keys() == adapters["one"].keys()
    for key, weight in adapters["one"].items():
        torch.testing.assert_close(adapters["ddp"][key], weight, rtol=1e-4, atol=1e-6, msg=key)
