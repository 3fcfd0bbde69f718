"""The Space: input checks, staging with `deploy`, and the staged app served and called through
gradio_client, with a tiny model and with SmolLM2. The browser test is in test_space_browser.py."""

import csv
import json
import re
from pathlib import Path

import pytest
import tomllib

from pricer.cli.main import main
from pricer.read.serving import MAX_CHARS, ProductError, product_record
from tests.conftest import REPO, SECRET, RecordingApi, holds_no_secret, serve


def front_matter(path: Path) -> dict:
    from huggingface_hub import SpaceCard

    return SpaceCard.load(path).data.to_dict()


def test_the_space_card_names_what_the_hub_needs():
    meta = front_matter(REPO / "space" / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["suggested_hardware"] == "t4-small" and meta["short_description"]
    assert "models" in meta and "datasets" in meta
    # The Space runs the gradio the tests ran: the pin, the card and the installed one agree.
    import gradio

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["space"] == [f"gradio=={meta['sdk_version']}"]
    assert gradio.__version__ == meta["sdk_version"]


def test_space_requirements_ask_for_the_versions_pricer_needs():
    def specs(lines):
        out = {}
        for line in lines:
            line = line.split("#")[0].strip()
            if line:
                name = re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")
                out[name] = line[len(name) :]
        return out

    space = specs((REPO / "space" / "requirements.txt").read_text().splitlines())
    project = specs(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    shared = set(space) & set(project)
    assert {"torch", "transformers", "peft", "bitsandbytes", "accelerate"} <= shared
    assert {name: space[name] for name in shared} == {name: project[name] for name in shared}
    assert "lightning" not in space  # serving imports no Lightning


@pytest.mark.parametrize(
    "fields, message",
    [
        (("", ""), "Please enter a product title or description"),
        (("   ", "\n\t"), "Please enter a product title or description"),
        (("Kettle", "x" * (MAX_CHARS + 1)), f"The description is {MAX_CHARS + 1:,} characters long"),
        (("Kettle\x00", "A kettle"), r"The title contains characters that cannot be read \(U\+0000\)"),
        (
            ("Kettle", "A kettle \ue000"),
            r"The description contains characters that cannot be read \(U\+E000\)",
        ),
        (("!!!", "?? --"), "has no letters or digits"),
    ],
)
def test_bad_input_gets_a_message_naming_the_field(fields, message):
    with pytest.raises(ProductError, match=message):
        product_record(*fields)


def test_a_typed_product_becomes_a_raw_record():
    got = product_record(" Kettle ", "A kettle.", "Auto shut-off\n\nCordless", "Brand: Acme\nWeight: 1 kg")
    assert got == {
        "title": "Kettle",
        "description": ["A kettle."],
        "features": ["Auto shut-off", "Cordless"],
        "details": {"Brand": "Acme", "Weight": "1 kg"},
    }


@pytest.mark.slow
def test_deploy_stages_the_space_repo(staged, trained):
    _, run = trained
    assert sorted(p.name for p in staged.iterdir()) == [
        "README.md",
        "app.py",
        "pricer",
        "pricer_space.json",
        "requirements.txt",
    ]
    meta = front_matter(staged / "README.md")
    assert meta["models"] == ["me/tiny-llama", "me/pricer-tiny"]
    assert meta["datasets"] == ["me/pricer-data"]
    settings = json.loads((staged / "pricer_space.json").read_text())
    assert settings["metrics"] == json.loads((run / "metrics.json").read_text())
    assert settings["train_items"] == 16 and settings["categories"] == ["Appliances"]
    test_titles = [r["title"] for r in csv.DictReader((run / "predictions.csv").open())]
    assert [e["title"] for e in settings["examples"]] == test_titles
    assert all(e["description"] and not e["description"].startswith(e["title"]) for e in settings["examples"])
    # How prices are read is the adapter's own recipe, not the Space's settings
    assert not {"rules", "quantization", "point", "coverage"} & set(settings)
    assert holds_no_secret(staged) >= 8  # the app, the package, the adapter and its files


@pytest.mark.slow
def test_the_staged_package_is_this_package_byte_for_byte(staged):
    package = REPO / "pricer"
    mine = {p.relative_to(package): p.read_bytes() for p in package.rglob("*.py")}
    copied = {
        p.relative_to(staged / "pricer"): p.read_bytes()
        for p in (staged / "pricer").rglob("*")
        if p.is_file()
    }
    assert copied == mine


@pytest.mark.slow
def test_deploy_pushes_one_commit_to_a_gradio_space(trained, monkeypatch):
    import huggingface_hub

    apis = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: apis.append(RecordingApi()) or apis[-1])
    monkeypatch.setenv("HF_TOKEN", SECRET)
    args, run = trained
    main(["deploy", *args, "--run_name", "space", "--space_repo", "me/pricer-space", "--upload", "true"])
    check, api = apis  # the token's access, checked before staging; then the push
    assert check.calls == [("whoami",)]
    assert api.calls[0] == (
        "create_repo",
        "me/pricer-space",
        {"repo_type": "space", "private": False, "exist_ok": True, "space_sdk": "gradio"},
    )
    (commit,) = [c for c in api.calls if c[0] == "upload_folder"]
    assert commit[2]["folder_path"] == str(run / "hub" / "space") and commit[2]["repo_type"] == "space"
    assert holds_no_secret(run / "hub" / "space")


@pytest.mark.slow
def test_deploy_needs_a_trained_run(trained, capsys):
    args, _ = trained
    with pytest.raises(SystemExit):
        main(["deploy", *args])
    assert "deploy: name the trained run to deploy with --run_name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["deploy", *args, "--run_name", "never-trained"])
    assert "holds no trained adapter" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["deploy", *args, "--run_name", "space", "--space_repo", "not a repo"])
    assert "deploy --space_repo: 'not a repo' is not a Hub repo id" in capsys.readouterr().err
    # no published adapter: the Space would serve the untrained base under the run's claims
    unpublished = args[-1] + "/../unpublished.yaml"
    Path(unpublished).write_text("trainer:\n  callbacks:\n    - class_path: pricer.read.report.PriceReport\n")
    with pytest.raises(SystemExit):
        main(["deploy", *args, "--config", unpublished, "--run_name", "space"])
    assert (
        "the run's adapter is not published (HubPublisher.model_repo is not set)" in capsys.readouterr().err
    )


@pytest.mark.slow
def test_deploy_from_a_locally_curated_source_names_no_local_path(trained, capsys):
    """A run's data from a local curated folder (the staged dataset here) and no dataset repo:
    the Space's card and settings name no dataset rather than a path that means nothing on the
    Hub."""
    args, run = trained
    local = run / "hub" / "dataset"
    overlay = run.parent / "no-dataset-repo.yaml"
    overlay.write_text(
        "trainer:\n  callbacks:\n    - class_path: pricer.hub.publish.HubPublisher\n"
        "      init_args: {model_repo: me/pricer-tiny, base_model_id: me/tiny-llama}\n"
    )
    main(["deploy", *args, "--config", str(overlay), "--run_name", "space", "--data.source", str(local)])
    staged = run / "hub" / "space"
    assert front_matter(staged / "README.md").get("datasets") in (None, [])
    assert json.loads((staged / "pricer_space.json").read_text())["dataset"] is None
    for path in staged.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md"):
            assert str(local) not in path.read_text(), path
    main(["deploy", *args, "--run_name", "space"])  # the fixture's own staging back in place


def http_price(url: str, data: list) -> tuple[str, object]:
    """/price called over plain HTTP (gradio's two-step call): the event and its data."""
    import urllib.request

    base = url.rstrip("/")
    request = urllib.request.Request(
        f"{base}/gradio_api/call/price",
        data=json.dumps({"data": data}).encode(),
        headers={"Content-Type": "application/json"},
    )
    event_id = json.loads(urllib.request.urlopen(request, timeout=60).read())["event_id"]
    stream = urllib.request.urlopen(f"{base}/gradio_api/call/price/{event_id}", timeout=120).read().decode()
    event = next(line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("event: "))
    payload = next(line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("data: "))
    return event, json.loads(payload)


def check_quote(result: dict) -> float:
    """The API's answer: a price inside its interval, and the interval's probability."""
    assert set(result) == {"price", "low", "high", "coverage"} and result["coverage"] == 0.8
    assert result["low"] <= result["price"] <= result["high"]
    return result["price"]


@pytest.mark.slow
def test_the_staged_app_serves_the_adapter_and_says_what_is_wrong(staged, trained, tiny_llama, tmp_path):
    from gradio_client import Client

    _, run = trained
    env = {"PRICER_BASE_MODEL": tiny_llama, "PRICER_ADAPTER": str(run / "adapter")}
    with serve(staged / "app.py", env, tmp_path / "app.log") as url:
        from gradio_client.exceptions import AppError

        client = Client(url, verbose=False)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert list(api) == ["/price"]  # one endpoint, named for what it does (it was /price_1)
        optional = {p["parameter_name"]: p["parameter_has_default"] for p in api["/price"]["parameters"]}
        assert optional == {"title": False, "description": True, "features": True, "details": True}
        price = check_quote(client.predict("Acme kettle", "A 1.7 litre kettle.", api_name="/price"))
        again = check_quote(client.predict("Acme kettle", "A 1.7 litre kettle.", "", "", api_name="/price"))
        assert price == again  # the same product, the same price, optional inputs left out or not
        with pytest.raises(AppError, match="Please enter a product title or description to price"):
            client.predict("", "  ", api_name="/price")  # an error to an API caller, not a result
        with pytest.raises(AppError, match="please keep it under 5,000"):
            client.predict("Kettle", "x" * (MAX_CHARS + 5), api_name="/price")
        for title, kind in ((42, "int"), (["a", "b"], "list")):  # what the page's box never sends
            with pytest.raises(AppError, match=f"The title must be text, not {kind}"):
                client.predict(title, "A kettle.", api_name="/price")
        # plain HTTP, as the API page shows it: the optional inputs may be left out there too
        event, data = http_price(url, ["Acme kettle", "A 1.7 litre kettle."])
        assert event == "complete" and check_quote(data[0]) == price
        event, data = http_price(url, [])
        assert event == "error" and "Please enter a product title or description" in data["error"]
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log and "upstream Gradio app has raised" not in log


@pytest.mark.slow
@pytest.mark.parametrize(
    "env, words",
    [
        ({}, "no adapter to serve: set PRICER_ADAPTER"),
        ({"PRICER_CONCURRENCY": "abc"}, "PRICER_CONCURRENCY='abc': must be a whole number of 1 or more"),
        ({"PRICER_QUEUE_SIZE": "0"}, "PRICER_QUEUE_SIZE='0': must be a whole number"),
        ({"PRICER_ADAPTER": "/nowhere/adapter"}, "/nowhere/adapter"),
        ({"PRICER_ADAPTER": "BAD_RECIPE"}, "pricer.json"),
    ],
)
def test_the_space_checks_its_settings_first_and_says_what_is_wrong_in_one_line(tmp_path, env, words):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    if env.get("PRICER_ADAPTER") == "BAD_RECIPE":
        adapter = tmp_path / "adapter"
        adapter.mkdir()
        (adapter / "pricer.json").write_text(json.dumps({"version": 99}))
        env = {"PRICER_ADAPTER": str(adapter), "PRICER_BASE_MODEL": str(tmp_path)}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRICER_")}
    result = subprocess.run(
        [sys.executable, str(REPO / "space" / "app.py")],
        env={**clean, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pricer space: error: ") and words in lines[0], (
        result.stderr
    )


@pytest.mark.slow
def test_a_local_run_brings_its_metrics_and_categories_and_the_adapter_its_recipe(trained, tmp_path):
    """PRICER_ADAPTER=<run>/adapter: the run's metrics and categories for the page; the read-out
    comes from the adapter's pricer.json."""
    from pricer.hub.space import SpaceSettings
    from pricer.read.recipe import read_recipe

    _, run = trained
    defaults = tmp_path / "space"
    defaults.mkdir()
    (defaults / "pricer_space.json").write_text(json.dumps({"base_model": "me/base"}))
    settings = SpaceSettings.load(defaults, {"PRICER_ADAPTER": str(run / "adapter")})
    assert settings.categories == ["Appliances"]
    assert settings.metrics == json.loads((run / "metrics.json").read_text())
    pricer = settings.pricer(device="cpu")
    recipe = read_recipe(run / "adapter")
    assert recipe.metrics["mae"] == settings.metrics["mae"]  # fit's test report, beside the adapter
    read = recipe.read
    assert (pricer.point, pricer.coverage, pricer.reader.price_reader.beam) == (
        read["point"],
        read["interval_coverage"],
        read["beam"],
    )
    assert pricer.base_model == recipe.base_model  # the training machine still has it


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            {"quantization": {"weights": "3bit"}},
            r"^Pricer: model.quantization.weights must be one of \('4bit', '8bit', 'none'\), got '3bit'",
        ),
        (
            {"read": {"point": "average"}},
            r"model.read.point must be one of \('median', 'mean'\), got 'average'",
        ),
        ({"read": {"interval_coverage": 80}}, "model.read.interval_coverage must be between 0 and 1, got 80"),
        ({"blend": {"weight": "0.6"}}, r"blend.weight must be a number in \[0, 1\], got '0.6'"),
        ({"blend": {"interval_scale": 0}}, "blend.interval_scale must be a positive number, got 0"),
        ({"blend": {"knn_share": 2}}, r"blend.knn_share must be a number in \[0, 1\], got 2"),
    ],
)
def test_a_bad_read_out_setting_is_named_before_anything_loads(setting, message):
    from pricer.read.recipe import Recipe
    from pricer.read.serving import Pricer

    # The base model does not exist: the setting is refused before any loading is tried.
    with pytest.raises(ValueError, match=message):
        Pricer(Recipe(base_model="/nonexistent/base").replaced(**setting), None, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("quantization, point", [("none", "median"), ("4bit", "mean")])
def test_the_space_prices_as_predict_does(trained, tiny_llama, tmp_path, quantization, point):
    """The Space's prompt and reading are predict's: the same products, the same prices, with
    the base quantized or not and either read-out."""
    from pricer.read.serving import Pricer

    args, run = trained
    products = [
        {"title": "Acme Kettle", "description": ["A 1.7 litre kettle with auto shut-off."], "features": [], "details": {}},
        {"title": "Deluxe Fridge", "description": ["A large fridge."], "features": ["Ice maker"], "details": {"Brand": "Acme"}},
    ]  # fmt: skip
    source = tmp_path / "products.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in products))
    main(
        [
            "predict", *args, "--run_name", f"predicted-{quantization}", "--model.quantization.weights",
            quantization, "--model.read.point", point, "--model.adapter", str(run / "adapter"),
            "--data.predict_source", str(source),
        ]
    )  # fmt: skip
    rows = list(csv.DictReader((run.parent / f"predicted-{quantization}" / "predict.csv").open()))
    # the run's recipe, with the two settings predict was told to change
    pricer = Pricer.from_adapter(
        str(run / "adapter"), device="cpu", quantization={"weights": quantization}, read={"point": point}
    )
    for product, row in zip(products, rows, strict=True):
        details = "\n".join(f"{k}: {v}" for k, v in product["details"].items())
        quote = pricer.quote(
            product["title"], product["description"][0], "\n".join(product["features"]), details
        )
        # predict.csv holds cents (the blend moves the whole-dollar quantiles off whole dollars)
        for got, wrote in zip(
            (quote.price, quote.low, quote.high), ("predicted", "low", "high"), strict=True
        ):
            assert round(got, 2) == float(row[wrote]), wrote


@pytest.mark.slow
def test_the_app_serves_smollm2(gguf, tmp_path):
    from gradio_client import Client

    env = {"PRICER_BASE_MODEL": str(gguf), "PRICER_ADAPTER": ""}
    with serve(REPO / "space" / "app.py", env, tmp_path / "app.log") as url:
        price = check_quote(
            Client(url, verbose=False).predict(
                "Stainless steel electric kettle, 1.7 litre",
                "Cordless kettle with a 1500 W element, auto shut-off and boil-dry protection.",
                api_name="/price",
            )
        )
        assert 0 <= price <= 999


@pytest.mark.parametrize(
    "adapter, phrase",
    [
        ("me/pricer-tiny", "Base model **me/base** with the LoRA adapter **me/pricer-tiny**."),
        (None, "Base model **me/base**, with no adapter: the untrained base model."),
    ],
)
def test_the_page_names_the_adapter_a_reader_can_follow(adapter, phrase):
    from pricer.hub.space import SpaceSettings

    assert SpaceSettings(base_model="me/base", adapter=adapter).about().startswith(phrase)


def test_a_local_adapter_is_named_by_its_run_not_as_adapter_adapter(tmp_path):
    from pricer.hub.space import SpaceSettings

    (tmp_path / "smoke-run" / "adapter").mkdir(parents=True)
    about = SpaceSettings(base_model="me/base", adapter=str(tmp_path / "smoke-run" / "adapter")).about()
    assert about.startswith("Base model **me/base** with the LoRA adapter of run **smoke-run**.")


def test_the_page_says_how_often_the_range_held_the_real_price():
    from pricer.hub.space import SpaceSettings

    metrics = {
        "n": 600,
        "mae": 40.5,
        "hit_rate": 0.74,
        "interval_coverage": {"nominal": 0.8, "measured": 0.71},
    }
    about = SpaceSettings(base_model="me/base", adapter="me/pricer-tiny", metrics=metrics).about()
    assert "Its 80% range held the real price for 71% of them." in about


def test_example_labels_are_cut_between_words():
    from pricer.hub.space import example_label

    title = "Replacement refrigerator water filter, pack of 3, certified to reduce chlorine taste"
    label = example_label(title)
    assert len(label) <= 60 and label.endswith("…") and title.startswith(label[:-1])
    assert title[len(label) - 1] in " ,"  # the cut falls between words, not inside one
    assert example_label("Kettle") == "Kettle"


def test_the_page_says_when_the_price_is_a_blend_and_what_the_llm_alone_made():
    from pricer.hub.space import SpaceSettings

    metrics = {"n": 600, "mae": 35.2, "hit_rate": 0.78}
    blended = {**metrics, "blend": {"weight": 0.6, "interval_scale": 1.0, "llm_alone": {"mae": 39.9}}}
    about = SpaceSettings(base_model="me/base", adapter="me/pricer-tiny", metrics=blended).about()
    assert (
        "blends the LLM's with a classical model's (0.6 LLM, 0.4 a TF-IDF ridge, chosen on validation)"
        in about
    )
    assert "the LLM alone was off by $39.90" in about
    near = {**blended, "blend": {**blended["blend"], "knn_share": 0.25}}  # as metrics.json holds it
    about = SpaceSettings(base_model="me/base", adapter="me/pricer-tiny", metrics=near).about()
    assert "(0.6 LLM, 0.4 the classical model: 0.75 of it a TF-IDF ridge, 0.25 the 5 most similar" in about
    alone = {**metrics, "blend": {"weight": 1.0, "interval_scale": 1.0, "llm_alone": {"mae": 35.2}}}
    assert "classical model's" not in SpaceSettings(base_model="me/base", metrics=alone).about()
    assert "price head" not in SpaceSettings(base_model="me/base", metrics=alone).about()
    head = {**metrics, "blend": {**alone["blend"], "head_weight": 0.35}}
    about = SpaceSettings(base_model="me/base", metrics=head).about()
    assert "mixes in, at 0.35 in log price, a price head's" in about and "classical model's" not in about
