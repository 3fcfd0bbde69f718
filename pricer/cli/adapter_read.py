"""How `validate`, `test` and `predict` read a trained adapter as its run did: the read-out fit
chose (for a checkpoint, from its run's adapter folder) and the neighbours its prompts showed."""

from __future__ import annotations

import json
from pathlib import Path

from pricer.cli.run_folder import read_checkpoint


def serve_the_runs_read_out(subcommand: str, config, model, run_dir: Path) -> None:
    """A checkpoint holds the LoRA weights only; the read-out fit chose (the blend, its
    TF-IDF model, the training items) lives in its run's adapter folder, and is served from
    there. A checkpoint outside a trained run reads the LLM alone, said in one line."""
    from pricer.read.adapter_files import saved_read_out
    from pricer.read.recipe import read_recipe

    if not config.get("ckpt_path") or config.model.get("adapter"):
        return
    folder = run_dir / "adapter"
    if read_recipe(folder) is None:
        model.served = f"the LLM alone: {folder} holds no adapter with the read-out fit chose"
        print(f"{subcommand}: a checkpoint reads {model.served}")
        return
    model.serve(saved_read_out(folder))
    print(f"{subcommand}: serving the run's read-out: {model.served}")
    chosen = adapter_step(run_dir)
    step = read_checkpoint(config.ckpt_path).get("global_step")
    if chosen is not None and step is not None and chosen != step:
        print(
            f"{subcommand}: note: the checkpoint holds step {step}'s weights; fit chose the "
            f"read-out for step {chosen}'s, the adapter's"
        )


def adapter_step(run_dir: Path) -> int | None:
    """The step whose weights the run's adapter holds, from its fit's metrics.json."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return (metrics.get("weights_from") or {}).get("step") if isinstance(metrics, dict) else None


def retrieve_as_the_adapter_did(
    subcommand: str, config, model, data, run_dir: Path, typed: set[str] | frozenset = frozenset()
) -> None:
    """An adapter is read with the prompts it trained on, as `Pricer.from_adapter` reads it: its
    recipe's curation rules (which shape a product's text) and neighbours, retrieved from the
    training items saved beside it (whatever the data source holds). A `data.` option typed on
    the command line (`typed`: the names after `--data.`) wins, and is said to differ."""
    from pricer.hub_calls import adapter_folder
    from pricer.read.adapter_files import saved_retriever
    from pricer.read.recipe import read_recipe

    adapter = model.hparams.adapter
    folder = adapter_folder(adapter) if adapter else run_dir / "adapter" if config.get("ckpt_path") else None
    recipe = read_recipe(folder) if folder is not None else None
    if recipe is None:
        return
    shown = ("neighbors", "neighbor_title_tokens", "neighbor_format", "neighbor_min_similarity")
    trained = {**{name: getattr(recipe, name) for name in shown}, "rules": recipe.curation_rules}
    given = {name for name in trained if any(t == name or t.startswith(f"{name}.") for t in typed)}
    differ = [name for name, value in trained.items() if getattr(data, name) != value]
    for name in differ:
        if name not in given:
            setattr(data, name, trained[name])
    taken = [n for n in differ if n not in given]
    if set(shown) & set(taken) and (data.neighbors or recipe.neighbors):
        settings = ", ".join(f"data.{name} {getattr(data, name)}" for name in shown)
        print(f"{subcommand}: {settings}: as the adapter was trained")
    if "rules" in taken:
        print(f"{subcommand}: data.rules: the curation rules the adapter was trained with")
    for name in (n for n in differ if n in given):
        shown = "" if name == "rules" else f" (trained: {trained[name]})"
        print(
            f"{subcommand}: note: data.{name} as typed{shown}, not as the adapter was trained: "
            "these prices are not the ones its fit measured"
        )
    if data.neighbors:
        data.use_index(saved_retriever(folder, data.tokenizer, data.neighbor_title_tokens))
