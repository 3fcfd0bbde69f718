"""`python -m pricer curate` on the real sample and on the wrong kind of file."""

import re

import pytest

from pricer.cli.main import main
from tests.conftest import REPO, SAMPLE_2018, write_raw

SMOKE = str(REPO / "configs" / "smoke.yaml")


def curate_args(gguf, source, cache):
    return [
        "curate",
        "--config",
        SMOKE,
        "--model.base_model",
        str(gguf),
        "--data.source",
        str(source),
        "--data.categories",
        "[Appliances, Musical_Instruments]",
        "--data.cache_dir",
        str(cache),
    ]


def test_curate_the_real_sample_then_hit_the_cache(gguf, sample, tmp_path, capsys):
    main(curate_args(gguf, sample, tmp_path))
    out = capsys.readouterr().out
    assert "curated splits written" in out
    assert "| read                       |     2,206 |" in out
    assert "| split: train               |       300 |" in out
    main(curate_args(gguf, sample, tmp_path))
    assert "reused from the cache" in capsys.readouterr().out


def test_curate_stops_on_the_2018_file(gguf, tmp_path, capsys):
    if not SAMPLE_2018.is_file():
        pytest.skip("the 2018 sample is not here")
    write_raw(tmp_path, "Appliances", SAMPLE_2018.read_text().splitlines())
    with pytest.raises(SystemExit) as stop:
        main(curate_args(gguf, tmp_path, tmp_path / "cache") + ["--data.categories", "[Appliances]"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "pricer: error:" in err and "is not Amazon Reviews 2023 metadata" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "option, value, names",
    [
        ("--trainer.gradient_clip_val", "0.5", "model.optimizer.max_grad_norm"),
        ("--trainer.accumulate_grad_batches", "2", "model.micro_batch_size"),
    ],
)
def test_lightnings_own_clipping_and_accumulation_name_pricers_options(
    tmp_path, capsys, option, value, names
):
    """pricer runs each optimizer step itself; the Trainer's versions would be refused by
    Lightning with a traceback after loading everything. Stopped before any work instead."""
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", SMOKE, "--trainer.default_root_dir", str(tmp_path), option, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"pricer: error: {option.removeprefix('--')}={value}" in err and names in err
    assert not any(tmp_path.iterdir())  # no run folder


@pytest.mark.parametrize("option, value", [("hub_repo", "me/data"), ("hub_upload", "true")])
def test_an_option_pricer_does_not_have_is_jsonargparses_one_line(tmp_path, capsys, option, value):
    """Publishing options live on the publisher; a data option of that name is simply unknown."""
    with pytest.raises(SystemExit) as stop:
        main(
            ["fit", "--config", SMOKE, "--trainer.default_root_dir", str(tmp_path), f"--data.{option}", value]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("pricer fit: error: unknown option") and f"--data.{option}" in err[0]
    assert err[1:] == ["(pricer fit --help lists the options)"]


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--data.rules.min_price", "10", "--data.rules.max_price", "5"],
            "data.rules: need 0 <= min_price <= max_price",
        ),
        (["--data.neighbor_dropout", "1.5"], "data.neighbor_dropout 1.5: the share of training prompts"),
        (["--data.categories", "[]"], "data.categories is empty"),
        (
            ["--data.neighbor_min_similarity", "1"],
            "data.neighbor_min_similarity 1.0: a cosine similarity below 1",
        ),
    ],
)
def test_an_out_of_range_option_is_one_line_and_starts_nothing(tmp_path, capsys, options, message):
    """The refusal is all that is said: no run folder or W&B line before it, no folder after."""
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", SMOKE, "--trainer.default_root_dir", str(tmp_path / "runs"), *options])
    assert stop.value.code == 2
    out, err = capsys.readouterr()
    assert (
        f"pricer: error: {message}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    )
    assert "run folder" not in out and "W&B" not in out
    assert not (tmp_path / "runs").exists()


def test_a_source_that_is_neither_here_nor_raw_names_both_readings(tmp_path, capsys, byte_tokenizer):
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "curate",
                "--config",
                SMOKE,
                "--model.base_model",
                byte_tokenizer,
                "--data.source",
                "nope/folder",
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "data.source 'nope/folder' is a Hub dataset id (there is no local folder by that name)" in err
    assert "nothing to curate" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--model.base_model", "/nowhere/model.gguf"],
            "model.base_model: /nowhere/model.gguf does not exist",
        ),
        (
            ["--model.base_model", "me/never-downloaded"],
            "model.base_model: me/never-downloaded is not in the local cache",
        ),
        (["--model.adapter", "./no/adapter"], "model.adapter: ./no/adapter does not exist"),
    ],
)
def test_a_model_that_is_not_here_stops_before_curation(
    raw_items, tiny_llama, tmp_path, capsys, options, message
):
    base = ["--model.base_model", tiny_llama] if options[0] != "--model.base_model" else []
    with pytest.raises(SystemExit):
        main(["fit", "--config", SMOKE, "--data.source", str(raw_items), "--data.cache_dir", str(tmp_path / "cache"),
              "--trainer.default_root_dir", str(tmp_path / "runs"), *base, *options])  # fmt: skip
    assert f"pricer: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def test_the_program_is_pricer_and_its_logs_carry_nothing_a_user_cannot_act_on(
    raw_items, byte_tokenizer, tmp_path, capsys, caplog
):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: pricer ") and "__main__" not in out and "fine-tune a 4-bit LoRA" in out
    summaries = " ".join(out.split())  # each subcommand's summary whole, not cut mid-sentence
    for summary in (
        "fit Train the LoRA adapter, then measure it on the test split; everything lands in one run folder.",
        "test Measure a trained run on a test split: metrics beside baselines, predictions and a chart.",
        "predict Price products (a JSONL of product texts, a curated dataset, or the test split) into predict.csv.",
    ):
        assert summary in summaries
    caplog.set_level("INFO")
    main(["curate", "--config", SMOKE, "--model.base_model", byte_tokenizer, "--data.source", str(raw_items),
          "--data.cache_dir", str(tmp_path / "cache"), "--data.train_size", "16", "--data.val_size", "4",
          "--data.test_size", "4"])  # fmt: skip
    shown = caplog.text + capsys.readouterr().err
    assert "litlogger" not in shown and "kernels-community" not in shown


@pytest.mark.parametrize(
    "environment, netrc, expected",
    [
        ({"WANDB_MODE": "offline", "WANDB_API_KEY": "k"}, None, (True, "WANDB_MODE=offline")),
        ({"WANDB_API_KEY": "k"}, None, (False, "logged in")),
        ({}, "machine api.wandb.ai\n  login user\n  password secret\n", (False, "logged in")),
        ({}, "machine example.com\n  login user\n  password secret\n", (True, "no W&B credentials")),
    ],
)
def test_wandb_is_online_whenever_it_has_credentials(monkeypatch, tmp_path, environment, netrc, expected):
    """A person logged in with `wandb login` (no environment variable) used to run offline."""
    from pricer.cli.run_folder import wandb_offline

    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    netrc_file = tmp_path / "netrc"
    if netrc:
        netrc_file.write_text(netrc)
        netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    offline, why = wandb_offline()
    assert offline == expected[0] and why.startswith(expected[1])


@pytest.mark.parametrize(
    "subcommand, name, message",
    [
        ("test", "../../elsewhere", "one folder name of letters, digits"),
        ("test", "a/b", "one folder name of letters, digits"),
        ("fit", "mine", "--evaluation mine: names a test report's folder; fit has none"),
    ],
)
def test_an_evaluation_name_is_one_plain_folder_under_the_run(tmp_path, capsys, subcommand, name, message):
    with pytest.raises(SystemExit) as stop:
        main(
            [
                subcommand,
                "--config",
                SMOKE,
                "--trainer.default_root_dir",
                str(tmp_path / "runs"),
                "--evaluation",
                name,
            ]
        )
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "config, options, expected",
    [
        (
            "data:\n  sourc: x\n",
            [],
            "pricer fit: error: unknown option data.sourc in {config}; did you mean data.source?",
        ),
        (
            "trainer:\n  max_epocs: 2\n",
            [],
            "pricer fit: error: unknown option trainer.max_epocs in {config}; did you mean trainer.max_epochs?",
        ),
        (
            "data:\n  categories: [Appliance, Software]\n",
            [],
            "pricer fit: error: data.categories in {config}: not a valid choice: 'Appliance' (did you mean "
            "'Appliances'?); the 33 choices are listed by `pricer fit --help_all`",
        ),
        (
            None,
            ["--model.lora_rr", "3"],
            "pricer fit: error: unknown option on the command line: --model.lora_rr (did you mean --model.lora.r?)",
        ),
        (
            None,
            ["--model.read.point", "mediann"],
            "pricer fit: error: model.read.point on the command line: not a valid choice: 'mediann' (did you "
            "mean 'median'?); choose from median, mean",
        ),
        (
            None,
            ["--trainer.precision=16-mix"],
            "pricer fit: error: trainer.precision on the command line: not a valid choice: '16-mix' (did you "
            "mean '16-mixed'?); choose from 64, 32, 16, transformer-engine, transformer-engine-float16, "
            "16-true, 16-mixed, bf16-true, bf16-mixed, 32-true, 64-true, bf16",
        ),
        (
            None,
            ["--data.val_size", "-1"],
            "pricer fit: error: data.val_size on the command line: Not of type NonNegativeInt: -1 does not "
            "conform to restriction v>=0",
        ),
        (
            None,
            ["--model.lora.r", "0"],
            "pricer fit: error: model.lora.r on the command line: Not of type PositiveInt: 0 does not conform "
            "to restriction v>0",
        ),
        (
            None,
            ["--model.lora_r", "8"],
            "pricer fit: error: unknown option on the command line: --model.lora_r (did you mean "
            "--model.lora.r?)",
        ),
        (
            "model:\n  lora_r: 8\n",
            [],
            "pricer fit: error: unknown option model.lora_r in {config}; did you mean model.lora.r?",
        ),
        (
            "model:\n  quantization: none\n",
            [],
            "pricer fit: error: model.quantization in {config}: model.quantization is a group of options, "
            "not a value ('none'): set its fields (model.quantization.<name>)",
        ),
    ],
)
def test_a_bad_key_or_choice_is_one_short_message_naming_where_and_the_closest_name(
    tmp_path, capsys, config, options, expected
):
    files = []
    if config is not None:
        path = tmp_path / "mine.yaml"
        path.write_text(config)
        files = ["--config", str(path)]
    with pytest.raises(SystemExit) as stop:
        main(
            ["fit", "--config", SMOKE, *files, "--trainer.default_root_dir", str(tmp_path / "runs"), *options]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [expected.format(config=tmp_path / "mine.yaml"), "(pricer fit --help lists the options)"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("print_config", [False, True])
def test_an_old_flat_value_where_a_group_goes_is_one_line(tmp_path, capsys, print_config):
    """`model.blend: false` from before the options were grouped: jsonargparse lets a plain
    value through where the group goes (a traceback when the module is built; print_config
    would show it as if it were kept). One line naming the field it belongs in instead."""
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  blend: false\n")
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "fit",
                "--config",
                SMOKE,
                "--config",
                str(path),
                "--trainer.default_root_dir",
                str(tmp_path / "runs"),
            ]
            + (["--print_config"] if print_config else [])
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "pricer: error: model.blend is a group of options, not a value ('false'): "
        "set its fields (model.blend.<name>)"
    ]
    assert not (tmp_path / "runs").exists()


def test_fit_help_puts_pricers_options_first_and_points_to_the_trainers(capsys):
    """`fit --help`: every one of pricer's options in a sentence, grouped as the config is, in at
    most 120 lines, then a pointer to `--help_all` (every option in full, the Trainer's too)."""
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    short = capsys.readouterr().out
    lines = short.splitlines()
    assert lines[0].startswith("usage: pricer fit ") and len(lines) <= 120
    model, lora, data, pointer = (
        short.index(s) for s in ("--model.base_model", "--model.lora.r=32", "--data.source", "The rest:")
    )
    assert model < lora < data < pointer
    assert "--trainer.gradient_clip_val" not in short and "pricer fit --help_all" in short
    assert "registry" not in short  # pricer's meaning of ckpt_path, not Lightning's registry keywords
    with pytest.raises(SystemExit):
        main(["fit", "--help_all"])
    from pricer.train.options import GROUPS

    full = capsys.readouterr().out
    assert (
        "--trainer.gradient_clip_val" in full
        and "--model.base_model" in full
        and len(full.splitlines()) > 500
    )
    options = re.findall(r"^\s+(--(?:model|data)\.[\w.]+)", full, flags=re.M)
    shown = set(re.findall(r"^\s+(--(?:model|data)\.[\w.]+)", short, flags=re.M))
    own_config = {"--model", "--data"} | {f"--model.{group}" for group in GROUPS}  # a section's file
    moved = {o for o in options if ".hub_" in o}  # data.hub_*: "Moved:" notes, one line each
    assert len(options) > 40 and set(options) - own_config - moved <= shown


def test_warnings_about_the_stacks_own_code_are_not_shown_and_others_are():
    import warnings

    from pricer.cli.logs import quiet_logs

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_logs()
        for text in (
            "'set_vital' is deprecated, please do not call",
            "`is_gradient_checkpointing` is deprecated and will be removed in v6.",
            "Precision bf16-mixed is not supported by the model summary.  Estimated model size ...",
            "`isinstance(treespec, LeafSpec)` is deprecated, use ...",
            "data.source has 3 bad lines",  # anything else still reaches the user
            # pricer trains its whole model in train mode: this one would mean a real defect
            "Found 397 module(s) in eval mode at the start of training. This may lead to ...",
        ):
            warnings.warn(text, UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [
        "data.source has 3 bad lines",
        "Found 397 module(s) in eval mode at the start of training. This may lead to ...",
    ]


def test_the_tokenizer_given_on_its_own_names_the_option_that_sets_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", SMOKE, "--trainer.default_root_dir", str(tmp_path / "runs"),
              "--data.tokenizer", "X"])  # fmt: skip
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert (
        "pricer fit: error: data.tokenizer on the command line: it is not set on its own, it follows " in err
    )
    assert "give --model.base_model instead" in err and "not callable" not in err
    assert not (tmp_path / "runs").exists()


def test_a_price_range_past_the_tokenizers_whole_numbers_is_refused_before_curation(
    raw_items, tiny_llama3, tmp_path, capsys
):
    """Llama 3 reads $0-$999 one token a price; a max_price of $1,500 would need four digits,
    which it writes as two number tokens: refused, naming the option, before any work."""
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", SMOKE, "--model.base_model", tiny_llama3, "--data.source", str(raw_items),
              "--data.cache_dir", str(tmp_path / "cache"), "--trainer.default_root_dir", str(tmp_path / "runs"),
              "--data.rules.max_price", "1500"])  # fmt: skip
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "pricer: error: data.rules.max_price 1500.0: prices of 4 digits cannot be read" in err
    assert "up to $999" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()
