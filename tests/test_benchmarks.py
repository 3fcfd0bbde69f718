"""The curation speed benchmark, at CI scale: a tiny raw folder, the byte tokenizer, one repeat."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, record, write_raw


def _benchmark(monkeypatch):
    spec = importlib.util.spec_from_file_location("curation_speed", REPO / "benchmarks" / "curation_speed.py")
    module = importlib.util.module_from_spec(spec)
    # Registered, as `python benchmarks/curation_speed.py` registers __main__: the process pools
    # pickle its functions and the course's loader by module name.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_curation_speed_on_a_tiny_folder(tmp_path: Path, byte_tokenizer: str, capsys, monkeypatch) -> None:
    """A few hundred lines in chunks of 64 (the course's 1,000 patched): every row, both
    process counts, the same items, texts, prompts and token counts on both sides."""
    source = tmp_path / "source"
    write_raw(
        source,
        "Appliances",
        [record(f"Fridge model {i}", 10.0 + i) for i in range(180)]
        + [record("No price", None), record("Too dear", 2000.0), record("Too short", 20.0, words=10)],
    )
    write_raw(
        source,
        "Software",
        [record(f"Editor edition {i}", 5.0 + i) for i in range(120)] + [record("Cheap", 0.1)],
    )
    out = tmp_path / "results.json"
    bench = _benchmark(monkeypatch)
    monkeypatch.setattr(bench, "CHUNK_SIZE", 64)

    code = bench.main(
        ["--sample", str(source), "--gguf", byte_tokenizer, "--repeats", "1", "--json", str(out)]
    )

    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "| pipeline | processes | median items/s | x course, same processes | median wall s |" in printed
    assert f"| {bench.EQUAL} | 2 |" in printed
    assert "Same outputs: at every process count, the same 300 (category, title) pairs" in printed
    results = json.loads(out.read_text())
    assert results["items_read"] == results["pricer_read"] == 304
    assert results["course_kept"] == results["pricer_usable"] == 300
    assert results["course_runs_agree"] is True
    assert len(results["checks"]) == 4  # each pricer row at each process count, checked
    for run, check in results["checks"].items():
        assert check["same_text"] == check["same_prompt"] == 300
        assert check["same_token_count"] == (300 if run.startswith(bench.EQUAL) else None)
        assert check["only_course"] == check["only_pricer"] == check["differing"] == 0
    assert [(r["pipeline"], r["processes"], r["token_count"]) for r in results["rows"]] == [
        (bench.COURSE, 1, True),
        (bench.EQUAL, 1, True),
        (bench.PLAIN, 1, False),
        (bench.COURSE, 2, True),
        (bench.EQUAL, 2, True),
        (bench.PLAIN, 2, False),
    ]
    assert all(r["ratio_to_course"] > 0 and r["items_per_s"] > 0 for r in results["rows"])


@pytest.mark.parametrize("broken", ["text", "token_count"])
def test_curation_speed_fails_when_outputs_differ(
    tmp_path: Path, byte_tokenizer: str, capsys, monkeypatch, broken: str
) -> None:
    """Exit 1 when a kept text differs (the course cut at 159 tokens) or only a token count does."""
    source = tmp_path / "source"
    write_raw(source, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(12)])
    bench = _benchmark(monkeypatch)
    if broken == "text":
        monkeypatch.setattr(bench, "MAX_TOKENS", bench.MAX_TOKENS - 1)
    else:  # the course's count one higher: only pricer's equal-outputs row can see it
        make_prompt = bench.CourseItem.make_prompt

        def counted_once_more(item, text):
            make_prompt(item, text)
            item.token_count += 1

        monkeypatch.setattr(bench.CourseItem, "make_prompt", counted_once_more)

    code = bench.main(
        ["--sample", str(source), "--gguf", byte_tokenizer, "--repeats", "1", "--processes", "1"]
    )

    printed = capsys.readouterr().out
    assert code == 1, printed
    same = "text 0, prompt 0, token count 0" if broken == "text" else "text 12, prompt 12, token count 0"
    assert f"OUTPUTS DIFFER ({bench.EQUAL}, 1 processes) for 12 items: {same} the same" in printed
    plain = f"OUTPUTS DIFFER ({bench.PLAIN}, 1 processes)"
    assert (plain in printed) == (broken == "text")  # a count it does not make cannot differ


@pytest.mark.slow
def test_training_speed_runs_both_paths_on_the_same_batches(tmp_path: Path, tiny_llama: str, capsys) -> None:
    """pricer's Lightning step and TRL's SFTTrainer (closest to the course, and its defaults),
    tiny model, three steps each: the same batches and the same initial LoRA, so the per-step
    losses agree; TRL's pinned settings are printed first."""
    import pytest

    pytest.importorskip("trl")
    from benchmarks.training_speed import main

    source = tmp_path / "source"
    write_raw(source, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(30)])
    out = tmp_path / "training.json"
    report = main(
        ["--sample", str(source), "--gguf", tiny_llama, "--steps", "3", "--batch-size", "2", "--skip", "1"]
        + ["--repeats", "1", "--lora-r", "4", "--peak-gflops", "100", "--json", str(out)]
        + ["--sides", "pricer", "trl", "trl-defaults"]
    )
    printed = capsys.readouterr().out
    assert "| gradient_checkpointing | True | False | True |" in printed
    assert printed.index("| gradient_checkpointing |") < printed.index("| training path |")
    assert (
        "SFTTrainer closest to the course: no checkpointing, completion-only loss; forced: LoRA cast to bfloat16, chunked LM head at every position, recomputed in backward |"
        in printed
    )
    assert "SFTTrainer, its defaults: gradient checkpointing, fused AdamW; forced:" in printed
    assert "| pricer: Lightning, LM head at the completion only |" in printed
    assert "against the fp32 matmul peak" in printed and "| step | pricer | trl | trl-defaults |" in printed
    assert len(report["pricer"]["losses"]) == len(report["trl"]["losses"]) == 3
    assert report["trl"]["loss_mean_relative_difference"] < 0.02
    assert report["trl-defaults"]["loss_mean_relative_difference"] < 0.02
    assert report["trl"]["checkpointing"] is False and report["trl-defaults"]["checkpointing"] is True
    assert report["pricer"]["samples_per_s"] > 0 and report["trl"]["samples_per_s"] > 0
    # Work done: TRL's head runs at every position (on CPU) and twice, checkpointing reruns the
    # decoder's forward, so executed FLOPs exceed the model FLOPs there and only there.
    assert report["pricer"]["hfu"] == report["pricer"]["mfu"] > 0
    assert report["trl"]["hfu"] > report["trl"]["mfu"] > 0
    assert json.loads(out.read_text())["speedup"] == report["speedup"]


def test_training_speed_counts_the_flops_of_the_work_done(tiny_llama: str) -> None:
    """The FLOPs formula on the tiny Llama, by hand: 2 layers, hidden 64, 4 heads of 16, 2 KV
    heads, MLP 128."""
    from transformers import AutoConfig

    from benchmarks.training_speed import Dims, step_flops

    dims = Dims.of(AutoConfig.from_pretrained(tiny_llama))
    weights = 64 * 64 * 2 + 64 * 32 * 2 + 64 * 128 * 3
    assert (dims.layers, dims.layer_weights, dims.attention_width) == (2, weights, 64)
    assert dims.lora_width == (64 + 64) * 2 + (64 + 32) * 2
    shape = {"sequences": 2, "length": 10, "tokens": 17, "completion": 3}
    run = {"lm_head": "completion", "lm_head_recomputed": False, "checkpointing": False}
    decoder = 2 * (4 * weights * 20 + 6 * 4 * dims.lora_width * 20 + 12 * 2 * 100 * 64)
    head = 4 * 64 * dims.vocab
    assert step_flops(dims, shape, run, lora_r=4) == (decoder + 3 * head, decoder + 3 * head)
    assert step_flops(dims, shape, {**run, "lm_head": "all"}, lora_r=4)[0] == decoder + 20 * head
    trl = {"lm_head": "shifted", "lm_head_recomputed": True, "checkpointing": True}
    forward = 2 * (2 * weights * 20 + 2 * 4 * dims.lora_width * 20 + 4 * 2 * 100 * 64)
    assert step_flops(dims, shape, trl, lora_r=4) == (
        decoder + 18 * head,
        decoder + 18 * head * 1.5 + forward,
    )


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
    assert "TRL" not in printed.split("Machine:")[0]  # no TRL settings without a TRL side
    assert "trl" not in report and "speedup" not in report
    # the same loss, computed two ways
    assert report["pricer-full-logits"]["loss_mean_relative_difference"] < 1e-5
    assert report["pricer"]["peak_rss_mib"] > 0
    # the full head costs FLOPs at every position, the completion-only head at a few
    assert report["pricer-full-logits"]["mfu"] > 0 and report["pricer"]["mfu"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_eval_speed_reads_the_same_items_on_every_side_and_compares_them(
    tmp_path: Path, tiny_llama: str, capsys, dtype: str
) -> None:
    import torch

    from benchmarks.eval_speed import main
    from tests.conftest import tiny_model

    model = tiny_model(tiny_llama, lora={"target_modules": ["q_proj", "v_proj", "up_proj"]})
    model.configure_model()
    with torch.no_grad():
        for name, parameter in model.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.3)
    model.save_adapter(tmp_path / "adapter")
    source = tmp_path / "source"
    write_raw(source, "Appliances", [record(f"Fridge model {i}", 10.0 + i) for i in range(30)])
    out = tmp_path / "eval.json"
    report = main(
        [
            "--sample",
            str(source),
            "--gguf",
            tiny_llama,
            "--adapter",
            str(tmp_path / "adapter"),
            "--items",
            "6",
        ]
        + [
            "--batch-size",
            "4",
            "--repeats",
            "2",
            "--dtype",
            dtype,
            "--peak-gflops",
            "100",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "| pricer test read: batched price reader, NF4 weights dequantized once (dense) |" in printed
    assert report["items"] == 6 and set(report["sides"]) == {
        "course",
        "pricer-4bit",
        "pricer",
        "pricer-shared",
    }
    for side in report["sides"].values():
        assert side["items_per_s"] > 0 and side["gflop_per_item"] > 0 and len(side["seconds"]) == 2
    # the dense read and the 4-bit read price every item alike; the course reads otherwise
    assert report["compared"]["pricer vs pricer-4bit"]["within_50c_or_1pct"] == 1.0
    # the shared prefix computed once: the same prices on this tiny model, fewer FLOPs an item
    assert report["compared"]["pricer-shared vs pricer"]["within_50c_or_1pct"] == 1.0
    assert report["sides"]["pricer-shared"]["gflop_per_item"] < report["sides"]["pricer"]["gflop_per_item"]
    saved = json.loads(out.read_text())
    assert len(saved["predictions"]["course"]) == len(saved["truth"]) == 6


def test_accuracy_table_pairs_every_row_with_tfidf_and_checks_the_targets(tmp_path: Path) -> None:
    """Rows from predictions.csv: the LLM alone, the blend, the untrained model and each
    baseline, each paired item by item against TF-IDF, with the interval's coverage."""
    import numpy as np
    import pandas as pd

    from benchmarks.accuracy_table import main
    from pricer.read.blend import Blend
    from pricer.read.metrics import mae_gap
    from pricer.read.tfidf import partner_prices

    rng = np.random.default_rng(0)
    n = 300
    truth = rng.uniform(10, 400, n)
    llm = truth * np.exp(rng.normal(0, 0.3, n))
    tfidf = truth * np.exp(rng.normal(0, 0.4, n))
    blended = Blend(0.6).apply(llm, llm * 0.8, llm * 1.3, tfidf)
    frame = pd.DataFrame(
        {
            "title": [f"item {i}" for i in range(n)],
            "category": "x",
            "price": truth,
            "predicted": blended[0],
            "low": blended[1],
            "high": blended[2],
            "llm_predicted": llm,
            "llm_low": llm * 0.8,
            "llm_high": llm * 1.3,
            "train_median": np.median(truth),
            "tfidf_linear_log_price": tfidf,
        }
    )
    metrics = {
        "read": {"point": "mean"},
        "baselines": {"train_median": {}, "tfidf_linear_log_price": {}},
        "blend": {"weight": 0.6, "interval_scale": 1.0},
        "interval_coverage": {"nominal": 0.8},
    }
    for name in ("tuned", "untrained"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    frame.to_csv(tmp_path / "tuned" / "predictions.csv", index=False)
    untrained = frame.assign(predicted=truth * 0.2, low=truth * 0.1, high=truth * 0.3)
    untrained.to_csv(tmp_path / "untrained" / "predictions.csv", index=False)
    text = main([str(tmp_path / "tuned"), str(tmp_path / "untrained")])
    rows = {
        line.split("|")[1].strip(): line
        for line in text.splitlines()
        if line.startswith("| ") and "$" in line
    }
    assert list(rows) == [
        "blend, 0.6 LLM (chosen on validation)",
        "fine-tuned LLM alone",
        "TF-IDF linear model",
        "training median",
        "same model before fine-tuning",
    ]  # best MAE first
    gap = mae_gap(truth, llm, tfidf)
    assert (
        f"${gap['mae_gap']:+.2f} (${gap['mae_gap_ci95'][0]:+.2f} to ${gap['mae_gap_ci95'][1]:+.2f})"
        in rows["fine-tuned LLM alone"]
    )
    held = ((llm * 0.8 <= truth) & (truth <= llm * 1.3)).mean()
    assert rows["fine-tuned LLM alone"].endswith(f"| {held:.1%} |")
    assert rows["TF-IDF linear model"].endswith("|  |  |")  # no gap to itself, no interval
    ratio = np.abs(blended[0] - truth).mean() / np.abs(tfidf - truth).mean()
    assert f"MAE: met, {100 * (1 - ratio):.1f}% below" in text
    assert "beyond the noise (paired interval below zero): met, " in text

    # validation kept the LLM alone: the blend row is its best mix, marked as not chosen
    metrics["blend"] = {"weight": 1.0, "interval_scale": 1.0, "validation": {"best_mix_weight": 0.8}}
    (tmp_path / "tuned" / "metrics.json").write_text(json.dumps(metrics))
    text = main([str(tmp_path / "tuned")])
    assert "| blend, 0.8 LLM (not chosen: validation kept the LLM alone) |" in text
    untrained.iloc[::-1].to_csv(tmp_path / "untrained" / "predictions.csv", index=False)
    with pytest.raises(SystemExit, match="not the same test items"):
        main([str(tmp_path / "tuned"), str(tmp_path / "untrained")])

    # with the nearest neighbours in the partner, that row mixes them as validation did
    near = truth * np.exp(rng.normal(0, 0.35, n))
    frame.assign(tfidf_knn_log_price=near).to_csv(tmp_path / "tuned" / "predictions.csv", index=False)
    metrics["baselines"]["tfidf_knn_log_price"] = {}
    metrics["blend"]["validation"] = {"best_mix_weight": 0.5, "best_mix_knn_share": 0.4}
    (tmp_path / "tuned" / "metrics.json").write_text(json.dumps(metrics))
    text = main([str(tmp_path / "tuned")])
    point = Blend(0.5, 1.0, 0.4).apply(llm, llm * 0.8, llm * 1.3, partner_prices(tfidf, near, 0.4))[0]
    mae = np.abs(point - truth).mean()
    assert (
        f"| blend, 0.5 LLM, the partner 0.4 neighbours (not chosen: validation kept the LLM alone) | ${mae:.2f} |"
        in text
    )
    assert f"| 5 nearest neighbours on TF-IDF | ${np.abs(near - truth).mean():.2f} |" in text


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


@pytest.mark.slow
def test_t4_check_reports_every_other_phase_when_one_fails(tmp_path: Path, monkeypatch) -> None:
    """On a lent GPU there is one try: a phase that fails writes its error and the rest still run
    and report (the read runs on the device whatever the fits before it did with the module)."""
    import lightning as L

    import benchmarks.t4_check as t4

    class Crash(L.Callback):
        def on_train_start(self, trainer, pl_module):
            raise RuntimeError("simulated crash in the course's phase")

    metered = t4.meter
    monkeypatch.setattr(
        t4, "meter", lambda result, phase, *a: Crash() if phase == "course" else metered(result, phase, *a)
    )
    out = tmp_path / "out"
    t4.main(
        ["--toy", "--out", str(out), "--work", str(tmp_path), "--steps", "2", "--course-steps", "2"]
        + ["--steps-per-trial", "1", "--read-items", "4", "--seq-len", "40"]
    )
    saved = json.loads((out / "t4_check.json").read_text())
    assert saved["finished"] is True
    assert saved["course"]["error"] == "RuntimeError: simulated crash in the course's phase"
    assert saved["found"]["steps"] == 2 and "error" not in saved["found"]
    assert saved["read"]["items"] == 4 and "error" not in saved["read"]
    assert "| course: did not finish | RuntimeError: simulated crash" in (out / "t4_check.md").read_text()


def test_accuracy_table_pairs_the_llm_with_neighbours_against_the_llm_without(tmp_path: Path) -> None:
    """Issue 30's table: `--without` adds today's LLM (trained without neighbours) as a row and
    as a second paired column, and the two targets are checked from the same items."""
    import numpy as np
    import pandas as pd

    from benchmarks.accuracy_table import main
    from pricer.read.metrics import mae_gap

    rng = np.random.default_rng(1)
    n = 300
    truth = rng.uniform(10, 400, n)
    frames = {}
    for name, spread in (("near", 0.15), ("today", 0.3)):
        llm = truth * np.exp(rng.normal(0, spread, n))
        frames[name] = pd.DataFrame(
            {
                "title": [f"item {i}" for i in range(n)],
                "price": truth,
                "predicted": llm,
                "low": llm * 0.8,
                "high": llm * 1.3,
                "llm_predicted": llm,
                "llm_low": llm * 0.8,
                "llm_high": llm * 1.3,
                "tfidf_linear_log_price": truth * np.exp(rng.normal(0, 0.5, n)),
            }
        )
    frames["today"]["tfidf_linear_log_price"] = frames["near"]["tfidf_linear_log_price"]
    metrics = {"baselines": {"tfidf_linear_log_price": {}}, "blend": {"weight": 1.0}}
    for name, frame in frames.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
        frame.to_csv(tmp_path / name / "predictions.csv", index=False)
    text = main([str(tmp_path / "near"), "--without", str(tmp_path / "today")])
    near, today = frames["near"]["llm_predicted"], frames["today"]["llm_predicted"]
    gap = mae_gap(truth, near, today)
    shown = f"${gap['mae_gap']:+.2f} (${gap['mae_gap_ci95'][0]:+.2f} to ${gap['mae_gap_ci95'][1]:+.2f})"
    (row,) = [line for line in text.splitlines() if line.startswith("| fine-tuned LLM alone |")]
    assert shown in row
    assert "| fine-tuned LLM without neighbours |" in text
    assert f"below the LLM without them beyond the noise: met, {shown}" in text
    ratio = np.abs(near - truth).mean() / np.abs(frames["near"]["tfidf_linear_log_price"] - truth).mean()
    verdict = "met" if ratio <= 0.75 else "missed"
    assert f"at least 25% below TF-IDF's MAE: {verdict}, {100 * (1 - ratio):.1f}% below" in text
    frames["today"].iloc[::-1].to_csv(tmp_path / "today" / "predictions.csv", index=False)
    with pytest.raises(SystemExit, match="not the same test items"):
        main([str(tmp_path / "near"), "--without", str(tmp_path / "today")])


def test_the_8b_arithmetic_is_what_the_training_guide_quotes() -> None:
    import re

    from benchmarks.t4_check import LLAMA_8B, appliances_seq_len
    from benchmarks.t4_memory import arithmetic_estimate

    seq_len = appliances_seq_len()  # the config's prompt, its neighbour block included
    estimate = arithmetic_estimate(json.loads(LLAMA_8B.read_text()), seq_len, 3, 32, 14.0)
    assert estimate["lora_parameters"] == 27_262_976  # r 32 on q/k/v/o of 32 layers: 27.3M
    guide = (REPO / "docs" / "training.md").read_text()
    assert f"config's {seq_len}-token prompts" in guide
    quoted = re.search(r"about ([\d.]+) GiB fixed and\s+([\d.]+) GiB a sample", guide)
    assert quoted and float(quoted[1]) == round(estimate["fixed_gib"], 1)
    assert float(quoted[2]) == round(estimate["per_sample_gib_completion_logits"], 2)


def test_the_t4_check_sizes_its_sequences_from_the_measured_lengths(tmp_path) -> None:
    """The longest sequence measured with Llama 3's tokenizer, grown by the neighbour block's
    header, its blank line and k of the longest line, a title budget moving each line."""
    from benchmarks.t4_check import PROMPT_LENGTHS, appliances_seq_len

    bound = json.loads(PROMPT_LENGTHS.read_text())["bound"]
    assert appliances_seq_len() == bound["seq_len"] >= bound["measured_max"]  # the config's k
    config = tmp_path / "job.yaml"
    config.write_text("data:\n  neighbors: 0\n")
    assert appliances_seq_len(config) == bound["longest_sequence_k0"]
    config.write_text("")  # an empty config: no data section, no neighbours
    assert appliances_seq_len(config) == bound["longest_sequence_k0"]
    config.write_text("data:\n  neighbors: 3\n  neighbor_title_tokens: 10\n")
    fixed = bound["longest_sequence_k0"] + bound["block_header_tokens"] + bound["separator_tokens"]
    assert appliances_seq_len(config) == fixed + 3 * (
        bound["longest_line"] - bound["neighbor_title_tokens"] + 10
    )


@pytest.mark.slow
def test_the_measured_lengths_are_what_the_benchmark_measures(sample, llama3_tokenizer, tmp_path) -> None:
    from benchmarks.prompt_lengths import main
    from benchmarks.t4_check import PROMPT_LENGTHS

    measured = main(
        ["--source", str(sample), "--tokenizer", llama3_tokenizer, "--out", str(tmp_path / "l.json")]
    )
    committed = json.loads(PROMPT_LENGTHS.read_text())
    assert measured == committed


def test_the_t4_checks_stand_in_reads_prices_as_llama_3s_tokenizer_does(llama3_tokenizer) -> None:
    """The GPU machine has no Llama 3 tokenizer: t4_check's stand-in must lead the reader to the
    same reading on every price 0-999 (each one token, in order) and the same refusal at 4 digits."""
    from benchmarks.t4_check import NUMBER_OFFSET, WholeNumbers
    from pricer.base.load import load_tokenizer
    from pricer.read.distribution import PriceReader
    from pricer.read.number_tokens import PriceRangeError

    real, stand_in = load_tokenizer(llama3_tokenizer), WholeNumbers()
    for tokenizer in (real, stand_in):
        with pytest.raises(PriceRangeError, match="prices of 4 digits cannot be read"):
            PriceReader(tokenizer, max_digits=4)
    real_reader, stand_in_reader = PriceReader(real), PriceReader(stand_in)
    assert real_reader.kind == stand_in_reader.kind == "whole"
    assert real.convert_ids_to_tokens(real_reader.number_ids.tolist()) == [str(v) for v in range(1000)]
    assert stand_in_reader.number_ids.tolist() == [NUMBER_OFFSET + v for v in range(1000)]


def test_compare_predictions_counts_agreement_and_refuses_other_items(tmp_path: Path) -> None:
    from benchmarks.compare_predictions import main

    def report(name: str, predicted: list[float], titles=("a", "b", "c", "d")) -> Path:
        path = tmp_path / f"{name}.csv"
        rows = ["title,category,price,predicted,low,high"]
        rows += [f"{t},X,100.0,{p},1,2" for t, p in zip(titles, predicted, strict=True)]
        path.write_text("\n".join(rows) + "\n")
        return path

    first = report("first", [100.0, 50.0, 200.0, 10.0])
    second = report("second", [100.4, 50.0, 201.9, 12.0])  # in, identical, in (1%), out
    result = main([str(first), str(second)])
    assert result["within_50c_or_1pct"] == 0.75 and result["identical"] == 0.25
    assert result["max_abs_difference"] == pytest.approx(2.0)
    # MAEs against the true $100: (0 + 50 + 100 + 90) / 4 and (0.4 + 50 + 101.9 + 88) / 4
    assert result["mae_moves_by"] == pytest.approx(0.075)
    # the first's MAE minus the second's, item by item, with its paired interval around it
    assert result["mae_gap"] == pytest.approx(-0.075)
    assert result["mae_gap_ci95"][0] <= result["mae_gap"] <= result["mae_gap_ci95"][1]
    with pytest.raises(SystemExit, match="item 4 differs"):
        main([str(first), str(report("other", [1, 2, 3, 4], titles=("a", "b", "c", "e")))])


def test_blend_partners_measures_each_partner_on_the_validation_reads(tmp_path: Path) -> None:
    """At toy scale: the classical models fitted on the train split, the LLM's validation reads
    blended with the ridge alone and with the neighbours too (which can only match or beat it on
    the items it is chosen on), and a validation.csv of other items refused."""
    import numpy as np
    import pandas as pd

    from benchmarks.blend_partners import main

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]

    def split(n: int) -> pd.DataFrame:
        texts = [" ".join(rng.choice(words, 12)) for _ in range(n)]
        prices = np.array([5.0 + 10 * sum(int(w[1:]) % 7 for w in t.split()) for t in texts])
        return pd.DataFrame({"title": texts, "text": texts, "price": prices})

    data = tmp_path / "data"
    data.mkdir()
    train, validation = split(200), split(50)
    train.to_parquet(data / "train-00000-of-00001.parquet")
    validation.to_parquet(data / "validation-00000-of-00001.parquet")
    llm = validation["price"].to_numpy() * np.exp(rng.normal(0, 0.4, 50))
    reads = validation.assign(predicted=llm, low=llm * 0.7, high=llm * 1.4)[
        ["title", "price", "predicted", "low", "high"]
    ]
    reads.to_csv(tmp_path / "validation.csv", index=False)
    result = main(
        ["--splits", str(data), str(tmp_path / "validation.csv"), "--json", str(tmp_path / "r.json")]
    )
    r = result[str(tmp_path / "validation.csv")]
    assert r["n"] == 50 and list(r["neighbors"]) == ["3", "5", "8", "10"]
    assert r["llm"] == pytest.approx(np.abs(llm - validation["price"]).mean())
    assert r["blend_ridge_and_neighbors"]["mae"] <= r["blend_ridge"]["mae"]
    assert r["gain"]["mae_gap"] == pytest.approx(
        r["blend_ridge_and_neighbors"]["mae"] - r["blend_ridge"]["mae"]
    )
    assert json.loads((tmp_path / "r.json").read_text()) == result
    reads.iloc[::-1].to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(SystemExit, match="not the validation items of these splits"):
        main(["--splits", str(data), str(tmp_path / "other.csv")])


@pytest.mark.parametrize("rows", [1, 15])  # one row: bitsandbytes' gemv; more: its gemm
def test_the_flop_counter_counts_4bit_matmuls_and_cpu_attention(rows: int) -> None:
    """A 4-bit layer counts as the dense matmul of its shape, and the CPU's fused attention as
    torch counts the GPU's (benchmarks/flops.py adds both to FlopCounterMode)."""
    import bitsandbytes as bnb
    import torch
    from torch.utils.flop_counter import sdpa_flop_count

    from benchmarks.flops import flop_counter

    layer = bnb.nn.Linear4bit(64, 96, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer = layer.to("cpu")
    with flop_counter() as counter, torch.no_grad():
        layer(torch.randn(rows, 64))
    assert counter.get_total_flops() == 2 * rows * 64 * 96

    q, k, v = torch.randn(2, 4, 7, 16), torch.randn(2, 4, 9, 16), torch.randn(2, 4, 9, 16)
    mask = torch.ones(2, 1, 7, 9, dtype=torch.bool)
    with flop_counter() as counter, torch.no_grad():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert counter.get_total_flops() == sdpa_flop_count(q.shape, k.shape, v.shape) > 0


def test_the_training_flops_formula_matches_torchs_count_of_a_real_step(tiny_llama: str, raw_items) -> None:
    """training_speed.py's model FLOPs of pricer's step (a formula, the usual MFU convention)
    against FlopCounterMode's count of that step's forward and backward on the tiny 4-bit
    Llama, to the FLOP once the two ways a real step differs from the convention are added:
    the CPU's fused attention recomputes its scores in backward (2.5 forwards, not 2), and
    autograd computes no input gradient for the first layer's q, k and v (their input comes
    from the frozen embedding)."""
    from transformers import AutoConfig

    from benchmarks.flops import flop_counter
    from benchmarks.training_speed import Dims, step_flops
    from pricer.data.batches import IGNORE_INDEX
    from tests.conftest import tiny_datamodule, tiny_model

    module = tiny_model(tiny_llama, lora={"r": 4, "alpha": 8})
    module.configure_model()
    datamodule = tiny_datamodule(raw_items, tiny_llama)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    length = int(batch["attention_mask"].sum(-1).max())  # trimmed, as a pass trims it
    part = {k: batch[k][:, :length] for k in ("input_ids", "attention_mask", "labels")}
    with flop_counter() as counter:
        loss, _ = module.completion_loss(**part)
        loss.backward()
    b, t = part["input_ids"].shape
    shape = {"sequences": b, "length": t, "completion": int((part["labels"][:, 1:] != IGNORE_INDEX).sum())}
    run = {"lm_head": "completion", "lm_head_recomputed": False, "checkpointing": False}
    dims = Dims.of(AutoConfig.from_pretrained(tiny_llama))
    formula, _ = step_flops(dims, shape, run, lora_r=4)
    attention_forward = 4 * b * t * t * dims.attention_width
    recomputed = dims.layers * attention_forward // 2
    qkv_in, qkv_weights = 3 * 64, 64 * 64 + 64 * 32 + 64 * 32  # hidden 64; 2 KV heads of 16
    first_layer_inputs = 2 * b * t * (qkv_weights + 4 * qkv_in)
    assert counter.get_total_flops() == formula + recomputed - first_layer_inputs
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    assert counts["bitsandbytes.gemm_4bit"] == dims.layers * 2 * dims.layer_weights * b * t


def test_neighbor_prompts_measures_each_k_on_the_validation_split(
    tmp_path: Path, byte_tokenizer: str
) -> None:
    """At toy scale: validation items that are near-copies of training items (another title,
    the same words) find them first (k=1: the neighbour's price is the copy's own), and each k
    makes the prompt longer."""
    import numpy as np
    import pandas as pd

    from benchmarks.neighbor_prompts import main
    from pricer.data.prompt import make_prompt

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(80)]
    texts = [f"Item {i}\n" + " ".join(rng.choice(words, 12)) for i in range(60)]
    prices = rng.uniform(5, 500, 60)
    train = pd.DataFrame(
        {
            "title": [t.split("\n")[0] for t in texts],
            "prompt": [make_prompt(t) for t in texts],
            "price": prices,
        }
    )
    # a copy under its own title: the same title would be the same product, never retrieved
    copies = train.iloc[:20].assign(
        price=prices[:20] * 1.5,
        title=[f"Copy {i}" for i in range(20)],
        prompt=[make_prompt(f"Copy {i}\n" + t.split("\n", 1)[1]) for i, t in enumerate(texts[:20])],
    )
    data = tmp_path / "data"
    data.mkdir()
    train.to_parquet(data / "train-00000-of-00001.parquet")
    copies.to_parquet(data / "validation-00000-of-00001.parquet")
    result = main(["--splits", str(data), "--tokenizer", byte_tokenizer, "--k", "0", "1", "3"])
    assert result[1]["median_mae"] == pytest.approx(np.abs(prices[:20] - prices[:20] * 1.5).mean())
    assert result[0]["tokens_mean"] < result[1]["tokens_mean"] < result[3]["tokens_mean"]
    # at k=3 a higher minimum similarity shows no more neighbours; each copy's original (the same
    # words, a cosine near 1) stays
    sweep = result["min_similarity"]
    shown = [sweep[m]["shown"] for m in sorted(sweep)]
    assert shown == sorted(shown, reverse=True) and sweep[0.0]["with_k"] == 20
    assert all(sweep[m]["none"] == 0 for m in sweep)  # each copy's own original stays


def test_every_marked_table_is_made_from_its_benchmarks_file(tmp_path) -> None:
    """The docs' marked tables equal what benchmarks/tables.py makes from the benchmarks' JSON
    files; a figure typed over one, or a table of no file, is caught."""
    from benchmarks import tables

    assert tables.main(["--check"]) == []
    report = json.loads((REPO / "benchmarks" / "course_texts.json").read_text())
    assert sum(report["kinds"].values()) == report["items"]
    marked = [m["name"] for page in tables.pages() for m in tables.BLOCK.finditer(page.read_text())]
    assert sorted(marked) == sorted(tables.TABLES)  # each table is shown, once
    page = tmp_path / "page.md"
    shown = tables.render("course_texts", "here")
    page.write_text(
        f"before\n<!-- table: course_texts -->\n{shown.replace('| 560 |', '| 561 |')}<!-- /table -->\n"
    )
    text, changed = tables.rewritten(page)
    assert (
        changed == ["course_texts"]
        and text == f"before\n<!-- table: course_texts -->\n{shown}<!-- /table -->\n"
    )
    page.write_text("<!-- table: typed_by_hand -->\n| 1 |\n<!-- /table -->\n")
    with pytest.raises(tables.TableError, match="no table named 'typed_by_hand'"):
        tables.rewritten(page)


def test_the_t4_arithmetic_file_is_what_the_code_computes_now(tmp_path) -> None:
    from benchmarks.t4_check import main

    main(["--arithmetic", "--json", str(tmp_path / "t4.json")])
    assert json.loads((tmp_path / "t4.json").read_text()) == json.loads(
        (REPO / "benchmarks" / "t4_arithmetic.json").read_text()
    )


@pytest.mark.slow
def test_the_course_texts_table_is_what_the_benchmark_measures(sample, llama3_tokenizer, tmp_path) -> None:
    from benchmarks.course_texts import main

    measured = main(
        ["--source", str(sample), "--tokenizer", llama3_tokenizer, "--out", str(tmp_path / "c.json")]
    )
    assert measured == json.loads((REPO / "benchmarks" / "course_texts.json").read_text())


def test_the_t4_check_turns_off_the_attention_a_t4_does_not_have(monkeypatch) -> None:
    import torch

    from benchmarks.t4_check import t4_attention

    flags = {}
    monkeypatch.setattr(torch.backends.cuda, "enable_flash_sdp", lambda on: flags.update(flash=on))
    monkeypatch.setattr(torch.backends.cuda, "enable_cudnn_sdp", lambda on: flags.update(cudnn=on))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert t4_attention(torch.device("cuda", 0)) == "flash and cuDNN attention off, as on a T4"
    assert flags == {"flash": False, "cudnn": False}
    flags.clear()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert t4_attention(torch.device("cuda", 0)) is None and flags == {}  # a T4 chooses for itself
    assert t4_attention(torch.device("cpu")) is None


def write_validation_csv(folder: Path, truth, predicted) -> None:
    import csv

    folder.mkdir(parents=True)
    with (folder / "validation.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title", "price", "predicted"])
        writer.writerows([f"item {i}", t, p] for i, (t, p) in enumerate(zip(truth, predicted, strict=True)))


def test_the_objective_study_adopts_an_arm_only_below_the_baseline_on_both_seeds(tmp_path) -> None:
    import shutil

    import numpy as np
    import pandas as pd

    from benchmarks.objective_study import WEIGHT, decide, table
    from pricer.read.metrics import gap_text

    arm = f"distance-{WEIGHT:g}"
    runs, kept = tmp_path / "runs", tmp_path / "kept"
    rng = np.random.default_rng(0)
    truth = rng.uniform(5, 500, 300)
    base = truth + rng.normal(0, 40, 300)
    closer = truth + (base - truth) * 0.8  # every item 20% nearer its price
    write_validation_csv(runs / "baseline-s1", truth, base)
    (row,) = [line for line in table(decide(runs, kept)).splitlines() if line.startswith(f"| {arm} ")]
    assert row.count("not run yet") == 3 and row.endswith("| not yet |")  # each seed, and both
    write_validation_csv(runs / f"{arm}-s1", truth, base + 3)  # above the baseline on seed 1
    (row,) = [line for line in table(decide(runs, kept)).splitlines() if line.startswith(f"| {arm} ")]
    assert row.endswith("| no |")  # seed 2 cannot change that
    shutil.rmtree(runs / f"{arm}-s1")
    write_validation_csv(runs / f"{arm}-s1", truth, closer)
    write_validation_csv(runs / "baseline-s2", truth, base)
    write_validation_csv(runs / f"{arm}-s2", truth, closer)
    result = decide(runs, kept)
    assert result["seed_1_mae"]["baseline"] > result["seed_1_mae"][arm]
    shown = table(json.loads(json.dumps(result)))  # as RESULTS makes it, from the written file
    (row,) = [line for line in shown.splitlines() if line.startswith(f"| {arm} ")]
    assert gap_text(result["arms"][arm]["pooled"]) in row and row.endswith("| yes |")
    assert result["head"] is None  # no head measured yet
    for seed in (1, 2):  # the head's mix on each baseline adapter: nearer on both seeds
        pd.DataFrame(
            {
                "title": [f"item {i}" for i in range(300)],
                "price": truth,
                "llm": base,
                "head": closer,
                "mix": closer,
            }
        ).to_csv(runs / f"baseline-s{seed}" / "hidden_head.csv", index=False)
    head = decide(runs, kept)["head"]
    assert head["adopted"] and head["pooled"]["mae_gap"] < 0 and set(head["seeds"]) == {1, 2}
    assert head["chosen"] == "last"  # the only head measured
    for seed in (1, 2):  # a second head, nearer on seed 1: chosen there, then judged on both
        pd.DataFrame(
            {"title": [f"item {i}" for i in range(300)], "price": truth, "llm": base, "mix": closer}
            | {"mix_last3": truth + (base - truth) * 0.5}
        ).to_csv(runs / f"baseline-s{seed}" / "hidden_head.csv", index=False)
    head = decide(runs, kept)["head"]
    assert head["chosen"] == "last3" and head["seed_1_mae"]["last3"] < head["seed_1_mae"]["last"]
    assert head["seeds"][1]["mae"] == pytest.approx(np.abs((base - truth) * 0.5).mean())
    (runs / "baseline-s2" / "hidden_head.csv").unlink()
    assert not decide(runs, kept)["head"]["adopted"]  # one seed alone adopts nothing
    assert result["arms"][arm]["adopted"] and result["arms"][arm]["pooled"]["mae_gap"] < 0
    # below on the pooled items, but above the baseline on seed 2 by itself: not adopted
    (runs / f"{arm}-s2" / "validation.csv").unlink()
    (runs / f"{arm}-s2").rmdir()
    write_validation_csv(runs / f"{arm}-s2", truth, truth + (base - truth) * 1.1)
    pooled_only = decide(runs, kept)["arms"][arm]
    assert pooled_only["pooled"]["mae_gap_ci95"][1] < 0 and pooled_only["seeds"][2]["gap"] > 0
    assert not pooled_only["adopted"]
    (row,) = [line for line in table(decide(runs, kept)).splitlines() if line.startswith(f"| {arm} ")]
    assert row.endswith("| no |")  # both seeds run, and not adopted
    # one seed alone adopts nothing
    (runs / f"{arm}-s2" / "validation.csv").unlink()
    alone = decide(runs, kept)
    assert not alone["arms"][arm]["adopted"]
    (row,) = [line for line in table(alone).splitlines() if line.startswith(f"| {arm} ")]
    assert "not run yet" in row and row.endswith("| not yet |")
    (runs / f"{arm}-s2" / "validation.csv").write_text("title,price,predicted\nsomething else,1,1\n")
    with pytest.raises(SystemExit, match="same validation items"):
        decide(runs, kept)


def test_the_objective_studys_kept_prices_outlive_the_run_folders(tmp_path) -> None:
    """A run kept in one working period is compared with a run of the next, whose folder gives
    the items' prices; the kept file holds the LLM's prices and no item's own."""
    import json
    import shutil

    import numpy as np
    import pandas as pd

    from benchmarks.objective_study import WEIGHT, decide, keep

    arm = f"distance-{WEIGHT:g}"
    runs, kept = tmp_path / "runs", tmp_path / "kept"
    rng = np.random.default_rng(1)
    truth = rng.uniform(5, 500, 200)
    base = truth + rng.normal(0, 40, 200)
    closer = truth + (base - truth) * 0.7
    write_validation_csv(runs / "baseline-s1", truth, base)
    pd.DataFrame(
        {
            "title": [f"item {i}" for i in range(200)],
            "price": truth,
            "llm": base,
            "head": closer,
            "mix": closer,
        }
    ).to_csv(runs / "baseline-s1" / "hidden_head.csv", index=False)
    write_validation_csv(runs / f"{arm}-s1", truth, closer)
    whole = decide(runs, kept)
    for name in ("baseline-s1", f"{arm}-s1"):
        record = json.loads(keep(runs / name, kept).read_text())
        assert set(record) <= {"run", "items", "predicted", "head"}  # no item's title or price
        assert set(record.get("head", {})) <= {"items", "llm", "mix", "mix_last3"}
    (runs / "unfinished-s1").mkdir()
    with pytest.raises(SystemExit, match="unfinished-s1: no validation.csv"):
        keep(runs / "unfinished-s1", kept)
    (runs / "unfinished-s1").rmdir()
    shutil.rmtree(runs / "baseline-s1")  # the first working period's folder is gone
    assert decide(runs, kept) == whole
    shutil.rmtree(runs / f"{arm}-s1")
    with pytest.raises(SystemExit, match="no run folder .* read the same validation items"):
        decide(runs, kept)
    (runs / "baseline-s2").mkdir()  # the same items in another order
    pd.DataFrame(
        {"title": [f"item {i}" for i in range(200)][::-1], "price": truth[::-1], "predicted": base[::-1]}
    ).to_csv(runs / "baseline-s2" / "validation.csv", index=False)
    with pytest.raises(SystemExit, match="no run folder .* read the same validation items"):
        decide(runs, kept)


def test_the_objective_studys_runs_are_commands_pricer_accepts(tmp_path, capsys) -> None:
    """Each planned run parses as written (its options exist and are in range)."""
    import shlex

    from benchmarks.objective_study import plan
    from pricer.cli.main import main

    for line in plan():
        if "<" in line:
            continue
        args = shlex.split(line.replace("$GGUF", str(tmp_path / "m.gguf")).replace("$SAMPLE", str(tmp_path)))
        assert args[:3] == ["python", "-m", "pricer"]
        with pytest.raises(SystemExit) as stop:
            main([*args[3:], "--print_config"])
        assert stop.value.code == 0, capsys.readouterr().err
        printed = capsys.readouterr().out
        assert "skip_test: true" in printed and "seed: 2026" in printed


def test_the_objective_studys_test_read_follows_its_decision(tmp_path, capsys) -> None:
    """Rule 8's commands: an adopted head adds its layers to one run a seed (the blend off, as it
    was chosen), read once by `pricer test`; an adopted loss adds a baseline run beside it; every
    pricer command parses as written, and the course's peer sees as many items."""
    import shlex

    from benchmarks.objective_study import STEPS, final
    from pricer.cli.main import main

    arms = {"distance-2.7": {"adopted": False}}
    head = final({"arms": arms, "head": {"chosen": "last3", "adopted": True}})
    fits = [line for line in head if " fit " in line]
    assert len(fits) == 2
    assert all("--model.blend.enabled false --model.blend.head_layers 3" in f for f in fits)
    assert sum(" test " in line for line in head) == 2
    assert sum(f"--max-steps {2 * STEPS}" in line for line in head) == 2
    neither = final({"arms": arms, "head": {"chosen": "last3", "adopted": False}})
    assert not any("head_layers" in line for line in neither)
    loss = final({"arms": {"distance-2.7": {"adopted": True}}, "head": None})
    assert [" --model.price_distance 2.7" in f for f in loss if " fit " in f] == [True, False, True, False]
    for line in head + loss:
        if not line.startswith("python -m pricer"):
            continue
        args = shlex.split(line.replace("$GGUF", str(tmp_path / "m.gguf")).replace("$SAMPLE", str(tmp_path)))
        with pytest.raises(SystemExit) as stop:
            main([*args[3:], "--print_config"])
        assert stop.value.code == 0, capsys.readouterr().err
        assert "seed: 2026" in capsys.readouterr().out


def test_the_course_recipe_trains_reads_and_records_its_test_read(tmp_path, tiny_llama, raw_items) -> None:
    """The peer at toy scale: TRL trains the course's LoRA on the curated prompts, generate and
    the regex read them, and a test read goes into the split's ledger like pricer's."""
    import csv

    from benchmarks.course_recipe import COURSE, main
    from pricer.data.test_ledger import LEDGER, earlier_reads
    from tests.conftest import small_datamodule

    data = small_datamodule(raw_items, tiny_llama, tmp_path / "cache", val_size=4, test_size=4)
    data.prepare_data()
    (folder,) = {p.parent.parent for p in (tmp_path / "cache").rglob("validation-*.parquet")}
    common = [
        "--splits",
        str(folder),
        "--gguf",
        tiny_llama,
        "--out",
        str(tmp_path / "course"),
        "--precision",
        "fp32",
    ]
    settings = main(["train", *common, "--limit", "8", "--max-steps", "2"])
    assert settings["train"]["steps"] == 2 and settings["lora"]["lora_r"] == COURSE["lora_r"]
    assert settings["sft_config"]["completion_only_loss"]["used"] is True
    assert (tmp_path / "course" / "adapter" / "adapter_config.json").is_file()
    path = main(["read", *common])
    rows = list(csv.DictReader(path.open()))
    assert (
        path.name == "validation.csv" and len(rows) == 4 and set(rows[0]) == {"title", "price", "predicted"}
    )
    assert not earlier_reads(folder / LEDGER)  # validation is no test read
    main(["read", *common, "--split", "test"])
    assert [r["stage"] for r in earlier_reads(folder / LEDGER)] == ["course recipe"]


@pytest.mark.slow
def test_the_hidden_state_head_is_measured_on_validation_beside_the_llm(tmp_path_factory, tiny_llama) -> None:
    """At toy scale: features of a trained run's prompts, a ridge head fitted on train, and its
    mix with the LLM's own validation prices; the weight 0 is the LLM, the weight 1 the head."""
    import numpy as np

    from benchmarks.hidden_head import WEIGHTS, main
    from tests.conftest import publishing_fit

    _, run = publishing_fit(tmp_path_factory.mktemp("head"), tiny_llama, "head", dataset_repo=False)
    (data,) = {p.parent for p in (run.parent.parent / "cache").rglob("validation-*.parquet")}
    result = main([str(run), "--splits", str(data), "--batch-size", "4", "--out", str(run / "head.json")])
    assert (result["train_items"], result["validation_items"]) == (16, 4)
    heads = result["heads"]
    # the tiny Llama's hidden size, and three layers' outputs side by side
    assert (heads["last"]["feature_size"], heads["last3"]["feature_size"]) == (64, 192)
    for head in heads.values():
        assert head["mix_mae_by_weight"][0.0] == pytest.approx(result["llm_mae"], abs=1e-6)
        assert head["mix_mae_by_weight"][1.0] == pytest.approx(head["head_mae"], abs=1e-6)
        assert set(head["cross_fitted_weights"]) <= set(WEIGHTS.tolist())
    assert (
        json.loads((run / "head.json").read_text())["heads"]["last"]["head_mae"] == heads["last"]["head_mae"]
    )
    import csv

    items = list(csv.DictReader((run / "hidden_head.csv").open()))
    assert len(items) == 4
    assert set(items[0]) == {"title", "price", "llm", "head", "mix", "head_last3", "mix_last3"}
    truth = np.array([float(r["price"]) for r in items])
    for variant, mixed in (("last", "mix"), ("last3", "mix_last3")):
        prices = np.array([float(r[mixed]) for r in items])
        assert np.abs(prices - truth).mean() == pytest.approx(heads[variant]["cross_fitted_mae"])
    (run / "validation.csv").write_text("title,price,predicted\nx,1.0,1.0\n")
    with pytest.raises(SystemExit, match="not the validation items"):
        main([str(run), "--splits", str(data)])
