"""The recipe beside an adapter (pricer.json): written by fit, checked when read, and what
`Pricer.from_adapter`, the Space and the model card's snippet build the model from."""

import copy
import csv
import dataclasses
import json
import re
import warnings
from pathlib import Path

import pytest

from pricer.cli.main import main
from pricer.read.recipe import HEADLINE, RECIPE_FILE, Recipe, RecipeError, read_recipe
from tests.conftest import SMOKE, edit_recipe, publishing_fit, quotes_as_test_wrote, serve_from_hub_cache

BODY = " ".join(f"word{i % 10}x" for i in range(80))  # conftest.record's description


@pytest.fixture(scope="module")
def fp4_run(tmp_path_factory, tiny_llama):
    """Trained on FP4 without double quantization, read with a narrow beam and the mean."""
    overrides = ["--model.quantization.type", "fp4", "--model.quantization.double_quant", "false"]
    overrides += ["--model.read.beam", "3", "--model.read.min_mass", "0.002", "--model.read.point", "mean"]
    _, run = publishing_fit(
        tmp_path_factory.mktemp("fp4"), tiny_llama, "fp4", *overrides, test_size=6, dataset_repo=False
    )
    return run


@pytest.mark.slow
def test_fit_writes_the_recipe_beside_the_adapter_and_the_staged_model(fp4_run, tiny_llama):
    recipe = read_recipe(fp4_run / "adapter")
    q, read = recipe.quantization, recipe.read
    assert (q["type"], q["double_quant"], q["weights"]) == ("fp4", False, "4bit")
    assert (read["point"], read["beam"], read["min_mass"], recipe.max_digits) == ("mean", 3, 0.002, 3)
    assert recipe.base_model == tiny_llama and recipe.base_model_id == "me/tiny-llama"
    assert recipe.rules["max_tokens"] == 160 and recipe.rules["part_number_length"] == 7
    metrics = json.loads((fp4_run / "metrics.json").read_text())
    assert recipe.metrics == {k: metrics[k] for k in HEADLINE if k in metrics}
    staged = read_recipe(fp4_run / "hub" / "model")
    # pushed with the adapter, naming the base by its Hub id: the local path stays in the run
    assert staged.base_model == "me/tiny-llama"
    assert staged == dataclasses.replace(recipe, base_model="me/tiny-llama")


@pytest.mark.slow
def test_the_space_serves_an_fp4_narrow_beam_run_with_the_prices_test_wrote(fp4_run, tmp_path):
    """The Space builds its model from the adapter's recipe alone: FP4, no double quantization,
    beam 3, minimum mass 0.002, the mean. Each test product typed into it gets the price `test`
    wrote, to the cent."""
    import bitsandbytes as bnb

    from pricer.hub.space import SpaceSettings
    from pricer.read.dense import DenseLinear
    from pricer.read.serving import Pricer

    space = tmp_path / "space"
    space.mkdir()
    (space / "pricer_space.json").write_text(json.dumps({"base_model": "me/tiny-llama"}))
    settings = SpaceSettings.load(space, {"PRICER_ADAPTER": str(fp4_run / "adapter")})
    pricer = settings.pricer(device="cpu")
    # on the CPU the Space reads dense layers dequantized from the 4-bit weights the recipe names
    assert isinstance(pricer.model.base_model.model.model.layers[0].self_attn.q_proj, DenseLinear)
    four_bit = Pricer.from_adapter(settings.adapter, base_model=settings.base_override, read={"cpu": "4bit"})
    q_proj = four_bit.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(q_proj, bnb.nn.Linear4bit)
    assert q_proj.weight.quant_state.quant_type == "fp4" and q_proj.weight.quant_state.nested is False
    assert q_proj.support_avx512bf16_for_cpu is False  # one kernel path, as fit measured
    assert (pricer.reader.price_reader.beam, pricer.reader.price_reader.min_mass, pricer.point) == (
        3,
        0.002,
        "mean",
    )

    # a blended run: the tiny untrained-scale model prices these fridges far worse than the
    # TF-IDF model, so validation blends it in; the Space reads the blend from the adapter
    recipe = read_recipe(fp4_run / "adapter")
    assert recipe.blend["weight"] < 1 and pricer.blend.weight == recipe.blend["weight"]
    quotes = quotes_as_test_wrote(pricer, fp4_run)
    assert len(quotes) == 6
    assert all(abs(quote.price - quote.llm_price) > 0.01 for quote in quotes)


@pytest.mark.slow
def test_a_blend_with_the_nearest_neighbours_prices_tests_llm_read_with_the_saved_partner(fp4_run, tmp_path):
    """The same adapter with the neighbours given half of the partner in its recipe: the Space
    reads them from tfidf.safetensors, and its price is test's LLM read blended with them."""
    import shutil

    import numpy as np

    from pricer.data.prompt import text_from_prompt
    from pricer.read.blend import Blend
    from pricer.read.serving import Pricer
    from pricer.read.tfidf import TfidfPrice

    adapter = tmp_path / "adapter"
    shutil.copytree(fp4_run / "adapter", adapter)
    edit_recipe(adapter, lambda data: data["blend"].update(knn_share=0.5))
    recipe = read_recipe(adapter)
    pricer = Pricer.from_adapter(str(adapter))
    assert (
        pricer.blend == Blend(recipe.blend["weight"], recipe.blend["interval_scale"], 0.5)
        and pricer.blend.uses_knn
    )
    partner = TfidfPrice.load(adapter)
    rows = list(csv.DictReader((fp4_run / "predictions.csv").open()))
    moved = 0
    for row in rows:
        quote = pricer.quote(row["title"], BODY, "Sturdy build\nEasy to clean", "Brand: Acme")
        text = text_from_prompt(quote.prompt)
        llm = [float(row[k]) for k in ("llm_predicted", "llm_low", "llm_high")]
        expected = pricer.blend.apply(*llm, partner.predict([text], 0.5))
        for got, want in zip((quote.price, quote.low, quote.high), expected, strict=True):
            assert round(got, 2) == round(float(np.ravel(want)[0]), 2), row["title"]
        moved += abs(quote.price - float(row["predicted"])) > 0.01  # the neighbours moved it
    assert moved > 0


@pytest.mark.slow
def test_space_vs_test_finds_the_spaces_quotes_equal_to_tests_prices(fp4_run, tmp_path):
    """The benchmark quotes each curated test prompt alone through Pricer.from_adapter, the
    Space's model with the run's blend, and compares with predictions.csv: equal to the cent
    for this fp32 run. A predictions.csv of other items, or in another order, is refused."""
    from benchmarks.space_vs_test import main

    (data,) = {p.parent for p in (fp4_run.parent.parent / "cache").rglob("test-*.parquet")}
    result = main([str(fp4_run), "--splits", str(data), "--json", str(tmp_path / "r.json")])
    assert (
        result["n"] == 6 and result["blend"]["weight"] == read_recipe(fp4_run / "adapter").blend["weight"] < 1
    )
    for share in ("close", "to_the_cent", "interval_close", "llm_close"):
        assert result[share] == 1, share
    assert result["largest_gap"] < 0.005
    assert json.loads((tmp_path / "r.json").read_text()) == result
    other = tmp_path / "other"
    other.mkdir()
    rows = (fp4_run / "predictions.csv").read_text().splitlines()
    (other / "predictions.csv").write_text("\n".join([rows[0], *reversed(rows[1:])]) + "\n")
    with pytest.raises(SystemExit, match="not the test items of"):
        main([str(other), "--splits", str(data)])
    (other / "predictions.csv").write_text("title,price,predicted\nFridge model 1,11.0,12.0\n")
    with pytest.raises(SystemExit, match="no low, high, llm_predicted column"):
        main([str(other), "--splits", str(data)])
    with pytest.raises(SystemExit, match="--items must be at least 1, got 0"):
        main([str(fp4_run), "--splits", str(data), "--items", "0"])


@pytest.mark.slow
def test_under_bf16_mixed_the_spaces_quotes_equal_tests_prices_to_the_cent(
    tmp_path_factory, tiny_llama, tmp_path, capsys
):
    """A run trained and tested under bf16-mixed: its recipe says so, the Space reads it under
    the same autocast, and each prompt test read in its batch is quoted alone to the cent, the
    LLM's own price and the interval too. (On the tiny model a batched read would agree as
    well; tests/test_quote.py proves test reads each prompt alone in 16 bits, and
    benchmarks/RESULTS.md measures what that changes on SmolLM2.)"""
    from benchmarks.space_vs_test import main

    args, run = publishing_fit(
        tmp_path_factory.mktemp("bf16"),
        tiny_llama,
        "bf16",
        "--trainer.precision",
        "bf16-mixed",
        test_size=8,
        dataset_repo=False,
    )
    assert read_recipe(run / "adapter").precision == "bf16-mixed"
    (data,) = {p.parent for p in (run.parent.parent / "cache").rglob("test-*.parquet")}
    result = main([str(run), "--splits", str(data)])
    assert result["n"] == 8
    for share in ("to_the_cent", "llm_to_the_cent", "interval_close"):
        assert result[share] == 1, share
    # `test` of the adapter with a config that says nothing of precision (the smoke one's null:
    # 32-true on a CPU) reads it under its recipe's bf16-mixed, as the Space does
    from pricer.cli.main import main as pricer

    capsys.readouterr()
    pricer(["test", *args, "--model.adapter", str(run / "adapter"), "--run_name", "again"])
    assert "trainer.precision='bf16-mixed'" in capsys.readouterr().out
    again = list(csv.DictReader((run.parent / "again" / "predictions.csv").open()))
    fit_test = list(csv.DictReader((run / "predictions.csv").open()))
    assert [r["llm_predicted"] for r in again] == [r["llm_predicted"] for r in fit_test]


@pytest.mark.slow
def test_the_model_cards_snippet_runs_as_written_against_the_staged_folder(fp4_run, tiny_llama, capsys):
    """The card's three lines, extracted from the staged README and run as they are; the Hub
    serves me/pricer-tiny from the staged folder and its base me/tiny-llama (the test double
    fills the download cache)."""
    readme = (fp4_run / "hub" / "model" / "README.md").read_text()
    snippet = re.search(r"## Use\n\n```python\n(.*?)```", readme, re.S)[1]
    lines = [line for line in snippet.splitlines() if line.strip()]
    assert len(lines) == 3 and 'Pricer.from_adapter("me/pricer-tiny")' in snippet
    assert "4-bit FP4" in readme and "with double quantization" not in readme
    serve_from_hub_cache(fp4_run / "hub" / "model", "me/pricer-tiny")
    serve_from_hub_cache(Path(tiny_llama), "me/tiny-llama")
    exec(compile(snippet, "model card snippet", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert 0 <= float(printed) <= 999


@pytest.mark.slow
def test_an_adapter_without_a_recipe_needs_its_base_and_names_the_defaults_it_uses(
    fp4_run, tmp_path, tiny_llama
):
    import shutil

    from pricer.read.serving import Pricer

    bare = tmp_path / "bare"
    shutil.copytree(fp4_run / "adapter", bare)
    (bare / RECIPE_FILE).unlink()
    with pytest.raises(RecipeError, match="no pricer.json beside the adapter.*copy it with"):
        Pricer.from_adapter(str(bare))
    with pytest.warns(UserWarning, match=r"defaults quantization=\{'weights': '4bit', 'type': 'nf4'"):
        Pricer.from_adapter(str(bare), base_model=tiny_llama, device="cpu", read={"point": "mean"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explicit = {
            "quantization": {
                "weights": "4bit",
                "type": "fp4",
                "double_quant": False,
                "compute_dtype": "auto",
            },
            "read": {"point": "mean", "interval_coverage": 0.8, "beam": 3, "min_mass": 0.002},
            "precision": "32-true",
        }
        pricer = Pricer.from_adapter(str(bare), base_model=tiny_llama, device="cpu", **explicit)
    assert not [w for w in caught if "pricer.json" in str(w.message)]  # everything given
    assert pricer.reader.price_reader.beam == 3


def test_a_local_base_that_is_not_here_is_replaced_by_its_hub_id_and_says_so(tmp_path):
    import warnings

    from pricer.base.load import base_for_here
    from tests.conftest import serve_from_hub_cache

    gone = tmp_path / "gone" / "model.gguf"
    recipe = Recipe(base_model=str(gone), base_model_id="me/base-not-cached")
    with pytest.raises(
        FileNotFoundError, match=rf"{gone} is not on this machine, and its Hub id me/base-not-cached"
    ):
        base_for_here(recipe)  # offline, and not in the cache: said, never a "couldn't connect"
    cached = tmp_path / "cached"
    cached.mkdir()
    (cached / "config.json").write_text("{}")
    serve_from_hub_cache(cached, "me/base")
    with pytest.warns(UserWarning, match=rf"{gone} is not on this machine; reading its Hub id me/base"):
        assert base_for_here(Recipe(base_model=str(gone), base_model_id="me/base")) == "me/base"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert base_for_here(Recipe(base_model="meta-llama/Llama-3.1-8B")) == "meta-llama/Llama-3.1-8B"
    with pytest.raises(FileNotFoundError, match="names no Hub id"):
        base_for_here(Recipe(base_model=str(tmp_path / "gone")))


VALID = Recipe(base_model="me/base", base_model_id="me/base").to_json()


def changed(path: str, value):
    data = copy.deepcopy(VALID)
    *sections, name = path.split(".")
    target = data
    for section in sections:
        target = target[section]
    if value is KeyError:
        del target[name]
    else:
        target[name] = value
    return data


@pytest.mark.parametrize(
    "data, message",
    [
        (
            changed("model.read.point", "mode"),
            r"model.read.point must be one of \('median', 'mean'\), got 'mode'",
        ),
        (
            changed("data.neighbor_title_tokens", True),
            r"data.neighbor_title_tokens must be a positive whole number",
        ),
        (
            changed("data.neighbor_min_similarity", 1.5),
            r"data.neighbor_min_similarity must be in \[0, 1\), got 1.5",
        ),
        (
            changed("data.neighbor_format", "table"),
            r"data.neighbor_format must be one of \('lines', 'summary', 'both'\), got 'table'",
        ),
        (
            changed("model.quantization.type", "int3"),
            r"model.quantization.type must be one of \('nf4', 'fp4'\)",
        ),
        (changed("model.read.beam", 0), "model.read.beam must be a positive whole number, got 0"),
        (
            changed("model.read.interval_coverage", 80),
            "model.read.interval_coverage must be between 0 and 1, got 80",
        ),
        (changed("model.read.cpu", KeyError), "model.read.cpu is missing"),
        (changed("model.quantization", KeyError), "model.quantization is missing"),
        (changed("model.read", 5), "model.read must be an object of its options, got 5"),
        (changed("trainer", KeyError), "the section 'trainer' is missing"),
        (changed("version", 1), "version 1; this pricer reads version 2"),
        (changed("format", "peft"), "not a pricer recipe"),
        (changed("data.rules", {**VALID["data"]["rules"], "max_chr": 3}), r"unknown rules \['max_chr'\]"),
        (
            changed("data.rules", {**VALID["data"]["rules"], "min_price": 9, "max_price": 5}),
            "min_price <= max_price",
        ),
        (changed("prompt.prefix", "Cost: $"), "differ from this pricer's prompt"),
        (changed("model.read.extra", 1), r"model.read: unknown fields \['extra'\]"),
        (changed("data.extra", 1), r"data: unknown fields \['extra'\]"),
        (changed("blend.weight", 1.5), r"blend.weight must be a number in \[0, 1\], got 1.5"),
        (changed("blend.interval_scale", 0), "blend.interval_scale must be a positive number, got 0"),
        (changed("blend.knn_share", -0.1), r"blend.knn_share must be a number in \[0, 1\], got -0.1"),
        (changed("trainer.precision", "bf16"), r"trainer.precision must be one of \('32-true', 'bf16-mixed'"),
    ],
)
def test_a_bad_recipe_is_refused_naming_the_file_and_the_field(tmp_path, data, message):
    (tmp_path / RECIPE_FILE).write_text(json.dumps(data))
    with pytest.raises(RecipeError, match=message) as error:
        read_recipe(tmp_path)
    assert str(tmp_path / RECIPE_FILE) in str(error.value)


def test_a_recipe_missing_any_field_is_refused_naming_it(tmp_path):
    """Every field is the adapter's contract: none is read as a default it may not have had."""
    data = changed("blend.weight", KeyError)
    (tmp_path / RECIPE_FILE).write_text(json.dumps(data))
    with pytest.raises(RecipeError, match=r"pricer.json: blend.weight is missing"):
        read_recipe(tmp_path)


def test_a_recipe_reads_back_as_it_was_written(tmp_path):
    recipe = Recipe(
        base_model="me/base",
        quantization={"type": "fp4"},
        read={"point": "mean", "beam": 5},
        precision="bf16-true",
    ).with_metrics({"mae": 1.5, "x": 2})
    recipe.save(tmp_path)
    assert read_recipe(tmp_path) == recipe and recipe.metrics == {"mae": 1.5}
    assert read_recipe(tmp_path / "nothing-here") is None
    (tmp_path / RECIPE_FILE).write_text("{not json")
    with pytest.raises(RecipeError, match="cannot be read"):
        read_recipe(tmp_path)


def test_a_config_round_trips_through_fits_recipe_into_pricer_under_the_same_names(tmp_path):
    """The options a config writes (`model.quantization`, `model.read`, `data.neighbors`, ...)
    are the recipe's sections as they are, and Pricer reads the same recipe: no option renamed on
    the way, so a config changed anywhere shows up everywhere."""
    import yaml

    from pricer.cli.commands import build_cli
    from pricer.data.rules import CurationRules
    from pricer.read.blend import Blend
    from pricer.read.serving import Pricer

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        "model:\n  quantization: {type: fp4, double_quant: false}\n  read: {point: mean, beam: 5, cpu: 4bit}\n"
        "data:\n  neighbors: 3\n  neighbor_format: both\n  rules: {max_tokens: 170}\n"
    )
    cli = build_cli(["--config", SMOKE, "--config", str(overlay)], run=False)
    dm = cli.datamodule
    prompt = {
        name: getattr(dm, name)
        for name in ("neighbors", "neighbor_title_tokens", "neighbor_format", "neighbor_min_similarity")
    }
    recipe = Recipe.from_model(
        cli.model.hparams, dm.rules, blend=Blend(0.7, 1.2, 0.5), precision="bf16-mixed", prompt=prompt
    )
    written = recipe.to_json()
    config = yaml.safe_load(overlay.read_text())
    for group in ("quantization", "read"):
        assert written["model"][group] == {**written["model"][group], **config["model"][group]}
        assert written["model"][group] == dict(cli.model.hparams[group])
    assert {k: written["data"][k] for k in ("neighbors", "neighbor_format")} == {
        "neighbors": 3,
        "neighbor_format": "both",
    }
    assert written["data"]["rules"] == CurationRules(**written["data"]["rules"]).as_dict()
    assert written["data"]["rules"]["max_tokens"] == 170
    assert written["blend"] == {"weight": 0.7, "interval_scale": 1.2, "knn_share": 0.5, "head_weight": 0.0}
    assert written["trainer"] == {"precision": "bf16-mixed"}
    # Pricer takes the recipe as it is, and a setting given to it by the same name
    assert Recipe.from_json(written) == recipe
    assert recipe.replaced(read={"beam": 7}).read == {**recipe.read, "beam": 7}
    assert recipe.model_options()["read.beam"] == 5 and recipe.model_options()["quantization.type"] == "fp4"
    with pytest.raises(TypeError, match="a recipe has no setting 'read_beam'"):
        recipe.replaced(read_beam=7)
    with pytest.raises(RecipeError, match=r"^Pricer: model.read.point must be one of"):
        Pricer(recipe.replaced(read={"point": "mode"}))
    import pricer

    assert (pricer.Pricer, pricer.Recipe) == (Pricer, Recipe)  # `from pricer import Pricer, Recipe`


@pytest.mark.slow
def test_test_and_predict_warn_when_the_base_differs_from_the_adapters(fp4_run, tiny_llama, capsys):
    from pricer.train.model import PriceModel

    PriceModel(base_model=tiny_llama, adapter=str(fp4_run / "adapter")).configure_model()
    err = capsys.readouterr().err
    assert (
        "model.quantization.type='nf4' (trained: 'fp4'), model.quantization.double_quant=True (trained: False)"
        in err
    )
    same = PriceModel(
        base_model=tiny_llama,
        adapter=str(fp4_run / "adapter"),
        quantization={"type": "fp4", "double_quant": False},
    )
    same.configure_model()
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
def test_test_reads_an_adapter_as_its_recipe_says_unless_told_otherwise(fp4_run, capsys):
    """`test --model.adapter` with the smoke config (NF4, double quantization, median, beam 32)
    reads the FP4 run's adapter as its pricer.json says, and so reproduces the run's own report;
    an option typed on the command line still wins."""
    root = fp4_run.parent.parent
    args = [
        "--config", SMOKE, "--config", str(root / "overlay.yaml"), "--model.base_model",
        read_recipe(fp4_run / "adapter").base_model, "--model.lora.r", "8", "--data.source", str(root),
        "--data.cache_dir", str(root / "cache"), "--trainer.default_root_dir", str(root / "runs"),
        "--model.adapter", str(fp4_run / "adapter"),
    ]  # fmt: skip
    main(["test", *args, "--run_name", "as-recipe"])
    out = capsys.readouterr().out
    assert (
        "read as its pricer.json says: quantization.type='fp4', quantization.double_quant=False, "
        "read.point='mean', read.beam=3" in out
    )
    assert json.loads((root / "runs" / "as-recipe" / "metrics.json").read_text())["mae"] == pytest.approx(
        json.loads((fp4_run / "metrics.json").read_text())["mae"], abs=0.005
    )
    main(["test", *args, "--run_name", "typed", "--model.read.point", "median"])
    assert (
        "read.point=" not in capsys.readouterr().out.split("read as its pricer.json says")[-1].split("\n")[0]
    )
    assert json.loads((root / "runs" / "typed" / "metrics.json").read_text())["read"]["point"] == "median"


def lora_adapter(folder: Path, tiny_llama: str, recipe: Recipe) -> Path:
    """A LoRA adapter of the tiny Llama saved as fit saves one: peft's files, then `recipe`
    stamped into the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from pricer.read.recipe import stamp_recipe

    model = get_peft_model(
        LlamaForCausalLM.from_pretrained(tiny_llama), LoraConfig(r=4, target_modules=["q_proj"])
    )
    model.save_pretrained(folder)
    stamp_recipe(folder, recipe)
    recipe.save(folder)
    return folder


@pytest.fixture
def stamped_adapter(tmp_path, tiny_llama) -> Path:
    """An adapter whose recipe shows two neighbours a prompt."""
    return lora_adapter(
        tmp_path / "run" / "adapter",
        tiny_llama,
        Recipe(base_model=tiny_llama, neighbors=2, metrics={"mae": 10.0}),
    )


def test_a_recipe_edited_by_hand_is_refused_and_its_metrics_are_not_its_contract(stamped_adapter):
    from safetensors.torch import load_file, save_file

    assert read_recipe(stamped_adapter).neighbors == 2
    path = stamped_adapter / RECIPE_FILE
    fit_wrote = path.read_text()
    data = json.loads(fit_wrote)
    data["metrics"] = {"mae": 99.0}  # fit's test writes these after the adapter is saved
    path.write_text(json.dumps(data))
    assert read_recipe(stamped_adapter).metrics == {"mae": 99.0}
    for edit, message in (
        (
            lambda d: d["data"].update(neighbors=5),
            r"pricer.json is not the recipe fit saved with these weights",
        ),
        (lambda d: d["data"].pop("neighbors"), r"pricer.json: data.neighbors is missing"),
    ):
        data = json.loads(fit_wrote)
        edit(data)
        path.write_text(json.dumps(data))
        with pytest.raises(RecipeError, match=message):
            read_recipe(stamped_adapter)
    path.write_text(fit_wrote)
    weights = stamped_adapter / "adapter_model.safetensors"
    save_file(load_file(weights), weights, metadata={"format": "pt"})  # weights from elsewhere
    with pytest.raises(RecipeError, match="carries no hash of a pricer recipe"):
        read_recipe(stamped_adapter)


def test_a_folder_without_its_recipe_is_refused_saying_what_it_is(stamped_adapter, tmp_path):
    from pricer.hub_calls import adapter_folder
    from pricer.read.recipe import adapter_recipe

    run = stamped_adapter.parent
    with pytest.raises(
        RecipeError, match=rf"model.adapter {run}: a run folder; its adapter is {stamped_adapter}"
    ):
        adapter_recipe(run)
    (stamped_adapter / RECIPE_FILE).unlink()
    with pytest.raises(
        RecipeError, match=r"no pricer.json beside the adapter\. pricer reads an adapter as its run"
    ):
        adapter_recipe(stamped_adapter)
    with pytest.raises(FileNotFoundError, match="a file; an adapter is the folder fit saved"):
        adapter_folder(str(stamped_adapter / "adapter_config.json"))
    with pytest.raises(FileNotFoundError, match=r"^adapter: empty; name an adapter folder or a Hub id"):
        adapter_folder("")


def test_predict_refuses_an_adapter_without_its_recipe_before_any_work(
    stamped_adapter, tiny_llama, tmp_path, capsys
):
    from pricer.cli.main import main

    (stamped_adapter / RECIPE_FILE).unlink()
    products = tmp_path / "products.jsonl"
    products.write_text('{"title": "Kettle", "description": "A kettle."}\n')
    with pytest.raises(SystemExit) as stop:
        main(["predict", "--config", SMOKE, "--model.base_model", tiny_llama, "--model.adapter", str(stamped_adapter),
              "--data.predict_source", str(products), "--trainer.default_root_dir", str(tmp_path / "runs")])  # fmt: skip
    assert stop.value.code == 2
    said = capsys.readouterr()
    assert f"pricer: error: model.adapter {stamped_adapter}: no pricer.json beside the adapter" in said.err
    assert len(said.err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
    assert "run folder" not in said.out and "W&B" not in said.out  # no folder said, none made


def test_predict_and_pricer_read_an_adapter_with_its_rules_not_the_configs(
    raw_items, tmp_path, tiny_llama, capsys
):
    """The adapter trained on texts cut at 20 tokens; the config cuts at 160. predict reads with
    the recipe's rules, as Pricer does, to the cent; a rule typed on the command line wins, said."""
    import csv

    from pricer.read.serving import Pricer

    rules = {**Recipe(base_model=tiny_llama).rules, "min_tokens": 10, "max_tokens": 20}
    adapter = lora_adapter(tmp_path / "adapter", tiny_llama, Recipe(base_model=tiny_llama, rules=rules))
    product = {"title": "Acme Kettle", "description": " ".join(f"word{i} steel kettle" for i in range(60))}
    products = tmp_path / "products.jsonl"
    products.write_text(json.dumps(product) + "\n")
    args = ["predict", "--config", SMOKE, "--model.base_model", tiny_llama, "--model.adapter", str(adapter),
            "--data.predict_source", str(products), "--trainer.default_root_dir", str(tmp_path / "runs"),
            "--data.source", str(raw_items), "--data.cache_dir", str(tmp_path / "cache"),
            "--data.train_size", "20", "--data.val_size", "4", "--data.test_size", "4",
            "--trainer.logger", "false"]  # fmt: skip
    main([*args, "--run_name", "as-trained"])
    assert "predict: data.rules: the curation rules the adapter was trained with" in capsys.readouterr().out
    (row,) = csv.DictReader((tmp_path / "runs" / "as-trained" / "predict.csv").open())
    quote = Pricer.from_adapter(str(adapter), device="cpu").quote(product["title"], product["description"])
    assert float(row["predicted"]) == round(quote.price, 2)
    main([*args, "--run_name", "typed", "--data.rules.max_tokens", "160"])
    assert "predict: note: data.rules as typed, not as the adapter was trained" in capsys.readouterr().out


def test_a_prompt_that_holds_a_neighbour_block_is_read_one_way_by_predict_and_pricer(tmp_path, tiny_llama):
    """The block a given prompt holds is left out by both: an adapter's prompts show what its own
    index retrieves (here none: it trained without), never a second block or a borrowed one."""
    from pricer.base.load import load_tokenizer
    from pricer.data.products import product_prompt
    from pricer.data.prompt import NEIGHBORS_HEADER, make_prompt, neighbor_block, with_neighbors
    from pricer.data.rules import CurationRules
    from pricer.read.serving import Pricer

    plain = make_prompt("Acme Kettle\nA steel kettle that boils fast.")
    held = with_neighbors(plain, neighbor_block([("Other Kettle", 25.0), ("Toaster", 40.0)]))
    tokenizer = load_tokenizer(tiny_llama)
    assert product_prompt({"prompt": held}, CurationRules(), tokenizer) == product_prompt(
        {"prompt": plain}, CurationRules(), tokenizer
    )
    pricer = Pricer.from_adapter(
        str(lora_adapter(tmp_path / "adapter", tiny_llama, Recipe(base_model=tiny_llama)))
    )
    quoted, again = pricer.quote_prompt(held), pricer.quote_prompt(plain)
    assert NEIGHBORS_HEADER not in quoted.prompt and quoted.prompt == again.prompt == plain
    assert quoted.price == again.price
