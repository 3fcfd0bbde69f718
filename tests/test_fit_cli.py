"""`python -m pricer fit` end to end on a tiny model: one run, one folder; resuming; secrets."""

from pathlib import Path

import pytest
import torch

from pricer.cli.main import main
from pricer.read.tfidf import BlendError
from tests.conftest import (
    SECRET,
    away_from_the_training_data,
    course_format_dataset,
    edit_recipe,
    predicted_cents,
)


@pytest.mark.slow
def test_fit_writes_one_run_folder(fit_args, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    main(["fit", *fit_args, "--run_name", "first"])
    run = tmp_path / "runs" / "first"
    assert "run folder: " + str(run) in capsys.readouterr().out
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    wandb_runs = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(wandb_runs) == 1
    logged = wandb_runs[0].read_bytes()
    assert b"cache_dir" in logged  # the resolved config went to W&B
    assert b"test_mae" in logged and b"test_scatter" in logged and b"test_predictions" in logged
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["first"]
    assert not (Path.cwd() / "lightning_logs").exists()
    for path in run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_resume_last_continues_the_named_run(fit_args, tmp_path):
    main(["fit", *fit_args, "--run_name", "r", "--trainer.max_steps", "2"])
    last = tmp_path / "runs" / "r" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert not list(last.parent.glob("last-v*.ckpt"))  # one last.ckpt when max_steps ends the run
    main(["fit", *fit_args, "--run_name", "r", "--ckpt_path", "last"])
    assert torch.load(last, weights_only=True)["global_step"] == 4  # 16 items in batches of 4

    # test from a checkpoint reports into that checkpoint's run folder, as an evaluation of it
    main(["test", *fit_args, "--ckpt_path", str(last)])
    assert (tmp_path / "runs" / "r" / "evaluations" / f"{tmp_path.name}-test" / "metrics.json").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r"]


def test_resume_last_without_a_checkpoint_is_an_error(fit_args, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fit", *fit_args, "--ckpt_path", "last"])
    assert stop.value.code == 2
    assert "no run under" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", *fit_args, "--run_name", "new", "--ckpt_path", "last"])
    assert "runs/new has no checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "new").exists()  # nothing started


@pytest.mark.slow
def test_fit_ends_with_a_test_report_that_test_alone_reproduces(fit_args, tmp_path, capsys):
    import csv
    import json
    import shutil

    main(["fit", *fit_args, "--run_name", "trained"])
    run = tmp_path / "runs" / "trained"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"n", "mae", "rmsle", "hit_rate", "smape", "median_ae", "mae_ci95", "baselines"} <= set(metrics)
    assert metrics["n"] == 4 and metrics["mae_ci95"][0] <= metrics["mae"] <= metrics["mae_ci95"][1]
    assert set(metrics["baselines"]) == {
        "train_mean",
        "train_median",
        "tfidf_linear_log_price",
        "tfidf_knn_log_price",
        "random_forest_bow_log_price",
    }
    rows = list(csv.DictReader((run / "predictions.csv").open()))
    read_outs = ["predicted", "low", "high", "llm_predicted", "llm_low", "llm_high"]
    assert len(rows) == 4 and list(rows[0]) == [
        "title",
        "category",
        "price",
        *read_outs,
        *metrics["baselines"],
    ]
    assert all(float(r["low"]) <= float(r["predicted"]) <= float(r["high"]) for r in rows)
    assert (run / "scatter.png").read_bytes()[:4] == b"\x89PNG"
    # what validation chose with, item by item: the kept weights' reads, and validate's again
    chosen_with = list(csv.DictReader((run / "validation.csv").open()))
    assert len(chosen_with) == 4 and list(chosen_with[0]) == ["title", "price", "predicted", "low", "high"]
    main(["validate", *fit_args, "--run_name", "revalidate", "--model.adapter", str(run / "adapter")])
    again_read = list(csv.DictReader((tmp_path / "runs" / "revalidate" / "validation.csv").open()))
    assert [(r["title"], r["price"]) for r in again_read] == [(r["title"], r["price"]) for r in chosen_with]
    assert [float(r["predicted"]) for r in again_read] == pytest.approx(
        [float(r["predicted"]) for r in chosen_with], rel=1e-4
    )
    # each baseline's prices are its row's: its MAE recomputes from predictions.csv
    for name, baseline in metrics["baselines"].items():
        recomputed = sum(abs(float(r[name]) - float(r["price"])) for r in rows) / 4
        assert recomputed == pytest.approx(baseline["mae"]), name

    main(["test", *fit_args, "--run_name", "retest", "--model.adapter", str(run / "adapter")])
    again = json.loads((tmp_path / "runs" / "retest" / "metrics.json").read_text())
    # the same measurements, the blend's included; which step's weights they are and what
    # validation said of the blend are fit's to say (it chose them)
    assert metrics.pop("weights_from")["chosen_by"] == "the final step"
    chosen = metrics["blend"].pop("validation")
    assert (chosen["weight"], chosen["interval_scale"]) == (
        metrics["read"]["blend_weight"],
        metrics["read"]["interval_scale"],
    )
    # fit names what it chose; the adapter's test, where it served it from
    assert metrics["read"].pop("served").startswith("the blend fit chose on validation")
    assert again["read"].pop("served").startswith(f"the blend fit chose, from {run / 'adapter'}")
    # the second read of the split, which counts the first
    assert metrics.pop("test_reads_before") == {"count": 0, "runs": []}
    assert again.pop("test_reads_before") == {"count": 1, "runs": [run.name]}
    assert again == metrics
    # a checkpoint tested on a test-only copy of the fit's test split (no train split) serves the
    # read-out fit chose, from the run's adapter: the fit's prices to the cent, its baselines
    # from the training items saved beside the adapter, and the report names what it served
    from pricer.read.recipe import read_recipe

    recipe = read_recipe(run / "adapter")
    assert recipe.blend["weight"] < 1, "the tiny run should choose a blend for this check to mean anything"
    # (the raw data and the curated cache are gone, and the adapter copied elsewhere: it reads alone)
    lite, adapter, prompts = away_from_the_training_data(run, tmp_path)
    capsys.readouterr()
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    main(["test", *fit_args, "--data.source", str(lite), "--ckpt_path", checkpoint])
    out = capsys.readouterr().out
    assert f"test: serving the run's read-out: the blend fit chose, from {run / 'adapter'}" in out
    served = json.loads((run / "evaluations" / "lite-test" / "metrics.json").read_text())
    assert served["read"]["served"].startswith("the blend fit chose")
    assert round(served["mae"], 2) == round(metrics["mae"], 2)
    served_rows = list(csv.DictReader((run / "evaluations" / "lite-test" / "predictions.csv").open()))
    assert [cents(r["predicted"]) for r in served_rows] == [cents(r["predicted"]) for r in rows]
    assert {k: v["mae"] for k, v in served["baselines"].items()} == pytest.approx(
        {k: v["mae"] for k, v in metrics["baselines"].items()}, abs=0.005
    )
    assert served["baselines_fitted_on"] == "the run's 16 training items, saved with its adapter"

    # predict and Pricer.from_adapter on the copy of the adapter alone: the same prices to the cent
    assert predicted_cents(fit_args, lite, adapter, tmp_path, "quotes") == [
        cents(r["predicted"]) for r in rows
    ]
    from pricer.read.serving import Pricer

    pricer = Pricer.from_adapter(str(adapter))
    assert [round(pricer.quote_prompt(p).price, 2) for p in prompts] == [cents(r["predicted"]) for r in rows]

    # an adapter copied without its training items: the blend as fit chose it, and no baselines
    # on a source without a train split; without its TF-IDF model too, it is refused in one line
    older = tmp_path / "older" / "adapter"
    shutil.copytree(adapter, older)
    (older / "train_items.parquet").unlink()
    edit_recipe(older, lambda recipe: recipe["files"].pop("train_items.parquet"))
    main(
        ["test", *fit_args, "--data.source", str(lite), "--model.adapter", str(older), "--run_name", "older"]
    )
    said = json.loads((tmp_path / "runs" / "older" / "metrics.json").read_text())
    assert said["read"]["served"].startswith("the blend fit chose") and "skipped" in said["baselines"]
    for name in ("tfidf.json", "tfidf.safetensors"):
        (older / name).unlink()
    edit_recipe(older, lambda recipe: recipe.pop("files"))
    with pytest.raises(BlendError, match=f"{older} has no tfidf.json or tfidf.safetensors, the TF-IDF model"):
        Pricer.from_adapter(str(older))


def cents(value) -> float:
    return round(float(value), 2)


@pytest.mark.slow
def test_test_alone_scores_every_row_of_a_course_format_test_only_dataset(fit_args, tmp_path):
    import json

    folder = course_format_dataset(tmp_path / "lite")
    main(["test", *fit_args, "--data.source", str(folder), "--run_name", "lite"])
    metrics = json.loads((tmp_path / "runs" / "lite" / "metrics.json").read_text())
    assert metrics["n"] == 5
    assert "skipped" in metrics["baselines"]


@pytest.mark.slow
def test_predict_prices_a_jsonl_of_three_products(fit_args, tmp_path, capsys):
    import csv
    import json

    products = tmp_path / "products.jsonl"
    lines = [
        {
            "title": "Acme Kettle",
            "description": ["A 1.7 litre kettle with auto shut-off."],
            "features": [],
            "details": {},
        },
        {"text": "Deluxe Fridge\nA large fridge with an ice maker."},
        {"prompt": "How much does this cost to the nearest dollar?\n\nTiny Fan\nA desk fan.\n\nPrice is $"},
    ]
    products.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    main(["predict", *fit_args, "--data.predict_source", str(products), "--run_name", "p"])
    rows = list(csv.DictReader((tmp_path / "runs" / "p" / "predict.csv").open()))
    assert [r["title"] for r in rows] == ["Acme Kettle", "Deluxe Fridge", "Tiny Fan"]
    assert all(0 <= float(r["low"]) <= float(r["predicted"]) <= float(r["high"]) <= 999 for r in rows)

    products.write_text(json.dumps(lines[0]) + "\n{broken\n")
    with pytest.raises(SystemExit):
        main(["predict", *fit_args, "--data.predict_source", str(products), "--run_name", "q"])
    assert "products.jsonl:2:" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "q").exists()  # stopped before any run folder or W&B run


@pytest.mark.slow
def test_a_test_pass_cut_short_reports_on_the_items_it_read(fit_args, tmp_path):
    """--trainer.limit_test_batches 1 reads one batch of the test split: the baselines are
    scored on the same items and the report says it is partial (it crashed in the baselines)."""
    import csv
    import json

    main(
        [
            "fit",
            *fit_args,
            "--run_name",
            "short",
            "--data.test_size",
            "12",
            "--trainer.limit_test_batches",
            "1",
        ]
    )
    run = tmp_path / "runs" / "short"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == 8  # one batch of eval_batch_size 8
    assert metrics["partial"] == "the first 8 of 12 test items (trainer.limit_test_batches)"
    assert {"tfidf_linear_log_price", "train_median"} <= set(metrics["baselines"])
    assert len(list(csv.DictReader((run / "predictions.csv").open()))) == 8
    assert (run / "scatter.png").is_file()


def test_every_predict_line_is_priced_or_stopped_with_its_line_number(byte_tokenizer, tmp_path):
    """Lines predict used to take wrongly: a Latin-1 byte (a traceback), a null text (priced as
    "None"), a prompt of any length (read whole: 60k tokens ran for 8 minutes)."""
    import json

    from pricer.base.load import load_tokenizer
    from pricer.data.products import load_products
    from pricer.data.raw import SourceError
    from pricer.data.rules import CurationRules

    rules, tokenizer = CurationRules(), load_tokenizer(byte_tokenizer)
    products = tmp_path / "products.jsonl"
    products.write_bytes(b'{"text": "Kettle"}\n{"title": "Caf\xe9 press", "description": ["A press."]}\n')
    with pytest.raises(SourceError, match=r"products.jsonl:2: not UTF-8 text"):
        load_products(str(products), rules, tokenizer)
    products.write_text('{"text": "Kettle"}\n{"text": null}\n')
    with pytest.raises(SourceError, match=r'products.jsonl:2: The "text" field must be text, not null'):
        load_products(str(products), rules, tokenizer)
    question = "How much does this cost to the nearest dollar?"
    products.write_text(json.dumps({"prompt": f"{question}\n\nFan\n{'x' * 150_000}\n\nPrice is $"}) + "\n")
    (item,) = load_products(str(products), rules, tokenizer)
    assert item["prompt"].startswith(f"{question}\n\nFan\n") and item["prompt"].endswith("\n\nPrice is $")
    assert item["prompt"].count("x") == rules.max_tokens - len("Fan\n")  # one token a byte
    with pytest.raises(SourceError, match="does not exist"):
        load_products(str(tmp_path / "nothing.jsonl"), rules, tokenizer)


def test_predict_csv_holds_cents_and_printable_titles(tmp_path):
    import csv

    from pricer.read.report import PREDICT_COLUMNS, write_predictions

    rows = [
        {"title": "Kettle\u202e evil\x07\nnext line", "predicted": 12.345678, "low": 10.0, "high": 15.0000001}
    ]
    write_predictions(rows, tmp_path / "predict.csv", PREDICT_COLUMNS, cents=True)
    (row,) = csv.DictReader((tmp_path / "predict.csv").open())
    assert row == {"title": "Kettle evil next line", "predicted": "12.35", "low": "10.0", "high": "15.0"}


def test_a_missing_checkpoint_stops_before_any_work_or_folder(fit_args, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["test", *fit_args, "--ckpt_path", str(tmp_path / "nonexistent.ckpt")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"pricer: error: --ckpt_path {tmp_path / 'nonexistent.ckpt'}: no such checkpoint file" in err
    assert not (tmp_path / "runs").exists()  # no run folder, no W&B run, no config.yaml


@pytest.mark.slow
def test_predict_stops_promptly_on_sigterm(tiny_llama, raw_items, tmp_path):
    """`kill` (SIGTERM) stops predict between batches; it used to price every product first."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    products = tmp_path / "products.jsonl"
    products.write_text(
        "".join(json.dumps({"text": f"Kettle number {i} " * 20}) + "\n" for i in range(20_000))
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "PRICER_RUN_NAME")}
    command = [sys.executable, "-m", "pricer", "predict", "--config", str(REPO / "configs" / "smoke.yaml"),
               "--model.base_model", tiny_llama, "--data.source", str(raw_items), "--data.cache_dir",
               str(tmp_path / "cache"), "--data.predict_source", str(products), "--trainer.logger", "false",
               "--trainer.default_root_dir", str(tmp_path / "runs"), "--data.eval_batch_size", "4",
               "--data.train_size", "16", "--data.val_size", "4", "--data.test_size", "4", "--data.num_proc", "1"]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    for line in process.stdout:  # wait until the products are read and pricing has begun
        output.append(line)
        if "run folder:" in line:
            break
    time.sleep(15)
    assert process.poll() is None, "".join(output)  # still pricing: 20,000 products take long
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    process.wait(timeout=60)
    assert time.monotonic() - sent < 30 and process.returncode == 143
    assert not list((tmp_path / "runs").glob("*/predict.csv"))


@pytest.mark.slow
def test_testing_on_another_dataset_leaves_the_fits_report_card_and_space_note_alone(
    fit_args, tmp_path, capsys
):
    """A checkpoint tested on a second, course-format dataset reports into its own folder; the
    fit's metrics.json and predictions.csv, the staged card and the Space's note stay the fit's."""
    import json

    publish = tmp_path / "publish.yaml"
    publish.write_text(
        "trainer:\n  callbacks:\n    - class_path: pricer.read.report.PriceReport\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n      init_args: {save_last: true}\n"
        "    - class_path: pricer.hub.publish.HubPublisher\n      init_args: {model_repo: me/pricer-tiny, base_model_id: me/tiny-llama}\n"
    )
    main(["fit", *fit_args, "--config", str(publish), "--run_name", "own"])
    run = tmp_path / "runs" / "own"
    kept = {name: (run / name).read_bytes() for name in ("metrics.json", "predictions.csv", "config.yaml")}
    card = (run / "hub" / "model" / "README.md").read_bytes()

    other = course_format_dataset(tmp_path / "lite")
    capsys.readouterr()
    main(["test", *fit_args, "--config", str(publish), "--data.source", str(other),
          "--trainer.default_root_dir", str(tmp_path / "elsewhere"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])  # fmt: skip
    evaluation = run / "evaluations" / "lite-test"
    assert f"test report: {evaluation}" in capsys.readouterr().out
    assert json.loads((evaluation / "metrics.json").read_text())["n"] == 5
    assert {name: (run / name).read_bytes() for name in kept} == kept
    assert (run / "hub" / "model" / "README.md").read_bytes() == card
    main(["deploy", *fit_args, "--config", str(publish), "--run_name", "own"])
    settings = json.loads((run / "hub" / "space" / "pricer_space.json").read_text())
    assert settings["metrics"] == json.loads(kept["metrics.json"])


@pytest.mark.slow
def test_a_run_without_a_terminal_prints_progress_lines(fit_args, tmp_path, capsys):
    """Under pytest stdout is not a terminal, as under nohup or in CI: a line a step here (4
    steps), with the loss, the time a step and the time left, and lines for the test pass."""
    import re

    main(["fit", *fit_args, "--run_name", "lines"])
    out = capsys.readouterr().out
    steps = re.findall(r"^step (\d+)/4 \(\d+%\), loss [\d.]+, [\d.]+ s a step, ETA \d+:\d\d:\d\d$", out, re.M)
    assert steps == ["1", "2", "3", "4"], out[-2000:]
    assert re.search(r"^test: batch 1/1 \(100%\), [\d.]+ s a batch, ETA 0:00:00$", out, re.M)
