"""The curation speed benchmark, at CI scale: a tiny raw folder, the byte tokenizer, one repeat."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import REPO, record, write_raw


def _benchmark():
    spec = importlib.util.spec_from_file_location("curation_speed", REPO / "benchmarks" / "curation_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_curation_speed_on_a_tiny_folder(tmp_path: Path, byte_tokenizer: str, capsys) -> None:
    source = tmp_path / "source"
    write_raw(
        source,
        "Appliances",
        [record(f"Fridge model {i}", 10.0 + i) for i in range(9)]
        + [record("No price", None), record("Too dear", 2000.0), record("Too short", 20.0, words=10)],
    )
    write_raw(
        source,
        "Software",
        [record(f"Editor edition {i}", 5.0 + i) for i in range(7)] + [record("Cheap", 0.1)],
    )
    out = tmp_path / "results.json"

    code = _benchmark().main(
        ["--sample", str(source), "--gguf", byte_tokenizer, "--repeats", "1", "--json", str(out)]
    )

    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "| pipeline | processes | median items/s | ratio to course | median wall s |" in printed
    assert "| pricer curate | 2 |" in printed
    assert "Kept sets agree" in printed
    results = json.loads(out.read_text())
    assert results["items_read"] == results["pricer_read"] == 20
    assert results["kept_sets_agree"] is True
    assert results["course_kept"] == results["pricer_usable"] == results["same_text"] == 16
    assert [(r["pipeline"], r["processes"]) for r in results["rows"]] == [
        ("course Item loop", 1),
        ("pricer curate", 1),
        ("pricer curate", 2),
    ]
    assert all(r["ratio_to_course"] > 0 and r["items_per_s"] > 0 for r in results["rows"])


@pytest.mark.slow
def test_training_speed_runs_both_paths_on_the_same_batches(tmp_path: Path, tiny_llama: str, capsys) -> None:
    """pricer's Lightning step and TRL's SFTTrainer, tiny model, three steps each: the same
    batches and the same initial LoRA, so the per-step losses agree."""
    import pytest

    pytest.importorskip("trl")
    from benchmarks.training_speed import main

    source = tmp_path / "source"
    write_raw(source, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(30)])
    out = tmp_path / "training.json"
    report = main(
        ["--sample", str(source), "--gguf", tiny_llama, "--steps", "3", "--batch-size", "2", "--skip", "1"]
        + ["--repeats", "1", "--lora-r", "4", "--peak-gflops", "100", "--json", str(out)]
    )
    printed = capsys.readouterr().out
    assert (
        "| course: TRL SFTTrainer, completion-only loss |" in printed
        and "| pricer: Lightning, LM head at the completion only |" in printed
    )
    assert len(report["pricer"]["losses"]) == len(report["trl"]["losses"]) == 3
    assert report["loss_mean_relative_difference"] < 0.02
    assert report["pricer"]["samples_per_s"] > 0 and report["trl"]["samples_per_s"] > 0
    assert json.loads(out.read_text())["speedup"] == report["speedup"]


@pytest.mark.slow
def test_training_speed_compares_completion_logits_with_full_logits(
    tmp_path: Path, tiny_llama: str, capsys
) -> None:
    from benchmarks.training_speed import main

    source = tmp_path / "source"
    write_raw(source, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(30)])
    report = main(
        ["--sample", str(source), "--gguf", tiny_llama, "--steps", "3", "--batch-size", "2", "--skip", "1"]
        + [
            "--repeats",
            "1",
            "--lora-r",
            "4",
            "--peak-gflops",
            "100",
            "--sides",
            "pricer",
            "pricer-full-logits",
        ]
    )
    printed = capsys.readouterr().out
    assert "| pricer: Lightning, full logits at every position |" in printed
    assert "trl" not in report and "speedup" not in report
    assert report["loss_mean_relative_difference"] < 1e-5  # the same loss, computed two ways
    assert report["pricer"]["peak_rss_mib"] > 0


@pytest.mark.slow
def test_eval_speed_scores_both_readers_on_the_same_items(tmp_path: Path, tiny_llama: str, capsys) -> None:
    from benchmarks.eval_speed import main

    source = tmp_path / "source"
    write_raw(source, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(30)])
    report = main(
        ["--sample", str(source), "--gguf", tiny_llama, "--items", "6", "--batch-size", "4", "--repeats", "1"]
        + ["--quantization", "none", "--pricer-dtype", "bf16", "--peak-gflops", "100"]
    )
    printed = capsys.readouterr().out
    assert "| pricer: batched price reader | bf16 |" in printed
    assert report["items"] == 6
    for side in ("course", "pricer"):
        assert report[side]["items_per_s"] > 0 and report[side]["mae"] >= 0


def test_accuracy_table_ranks_models_and_shows_the_paired_gap(tmp_path: Path) -> None:
    import numpy as np
    import pytest

    from benchmarks.accuracy_table import main
    from pricer.metrics import mae_gap, price_metrics

    rng = np.random.default_rng(0)
    truth = rng.uniform(10, 400, 200)
    tuned, untrained, median = truth + rng.normal(0, 20, 200), truth * 0.2, np.full(200, np.median(truth))
    metrics = price_metrics(truth, tuned)
    metrics["baselines"] = {"train_median": {**price_metrics(truth, median), **mae_gap(truth, tuned, median)}}
    metrics["read"] = {"point": "median"}
    for name, m in (("tuned", metrics), ("untrained", price_metrics(truth, untrained))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))
    text = main([str(tmp_path / "tuned"), str(tmp_path / "untrained")])
    names = [
        line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "$" in line
    ]
    assert names == ["fine-tuned (this run)", "training median", "same model before fine-tuning"]
    gap = metrics["baselines"]["train_median"]
    assert f"${gap['mae_gap']:+.2f} (${gap['mae_gap_ci95'][0]:+.2f}" in text and gap["mae_gap_ci95"][1] < 0
    # With both runs' predictions, the untrained row gets its paired gap too.
    import pandas as pd

    titles = [f"item {i}" for i in range(200)]
    for name, predicted in (("tuned", tuned), ("untrained", untrained)):
        frame = pd.DataFrame({"title": titles, "price": truth, "predicted": predicted})
        frame.to_csv(tmp_path / name / "predictions.csv", index=False)
    text = main([str(tmp_path / "tuned"), str(tmp_path / "untrained")])
    row = next(line for line in text.splitlines() if line.startswith("| same model before"))
    untrained_gap = mae_gap(truth, tuned, untrained)
    assert row.endswith(
        f"${untrained_gap['mae_gap']:+.2f} (${untrained_gap['mae_gap_ci95'][0]:+.2f} to "
        f"${untrained_gap['mae_gap_ci95'][1]:+.2f}) |"
    )
    frame.iloc[::-1].to_csv(tmp_path / "untrained" / "predictions.csv", index=False)
    with pytest.raises(SystemExit, match="not the same test items"):
        main([str(tmp_path / "tuned"), str(tmp_path / "untrained")])
    (tmp_path / "untrained" / "predictions.csv").unlink()
    (tmp_path / "untrained" / "metrics.json").write_text(
        json.dumps(price_metrics(truth[:50], untrained[:50]))
    )
    with pytest.raises(SystemExit, match="different splits"):
        main([str(tmp_path / "tuned"), str(tmp_path / "untrained")])


@pytest.mark.slow
def test_t4_check_runs_every_phase_at_toy_scale(tmp_path: Path) -> None:
    """The GPU script on the CPU with a tiny Llama: the search, the steps, the course's batch and
    the read all run through pricer's code, and the JSON is complete."""
    from benchmarks.t4_check import main

    out = tmp_path / "out"
    result = main(
        ["--toy", "--out", str(out), "--work", str(tmp_path), "--steps", "3", "--course-steps", "2"]
        + ["--steps-per-trial", "1", "--read-items", "4", "--seq-len", "40"]
    )
    saved = json.loads((out / "t4_check.json").read_text())
    assert saved["finished"] is True and saved["build"]["shards"] >= 1
    found = saved["found"]
    assert found["search_tried"] == {
        "1": True,
        "2": True,
        "4": True,
        "8": True,
        "16": True,
    }  # the CPU never runs out
    assert found["search_found"] == 16 and found["steps"] == 3 and found["lora_max_change"] > 0
    assert saved["course"]["micro_batch_size"] == 4 and saved["course"]["steps"] == 2
    assert saved["ratio_found_to_course_batch"] > 0
    assert saved["read"]["kind"] == "whole" and saved["read"]["items"] == 4
    assert all(0 < mass <= 1 for mass in saved["read"]["placed_mass"])
    assert "| pass size found (of 16 a step) | 16 |" in (out / "t4_check.md").read_text()
    assert result["arithmetic"]["fixed_gib"] > 0


def test_the_8b_arithmetic_is_what_the_readme_quotes() -> None:
    import re

    from benchmarks.t4_check import LLAMA_8B, arithmetic_estimate

    estimate = arithmetic_estimate(json.loads(LLAMA_8B.read_text()), 182, 3, 32, 14.0)
    assert estimate["lora_parameters"] == 27_262_976  # r 32 on q/k/v/o of 32 layers: the README's 27.3M
    readme = (REPO / "README.md").read_text()
    quoted = re.search(r"about ([\d.]+) GiB fixed and\s+([\d.]+) GiB a sample", readme)
    assert quoted and float(quoted[1]) == round(estimate["fixed_gib"], 1)
    assert float(quoted[2]) == round(estimate["per_sample_gib_completion_logits"], 2)
