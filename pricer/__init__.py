"""pricer: fine-tune a 4-bit LoRA LLM to predict a product's price from its text.

The data flows one way: raw records -> curated splits -> tokenized batches (`data`) -> the
model (`train`, on the base LLM of `base`) -> prices and metrics (`read`) -> cards, the Hub and
the Space (`hub`), all driven by the command line (`cli`). Each package's docstring says what
it may import; `tests/test_layout.py` checks it. `from pricer import Pricer` prices products
with a trained adapter; `Recipe` is what a Pricer is built from (an adapter's `pricer.json`).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Importing pricer stays light (no torch); `pricer.Pricer` loads the serving stack.
    if name == "Pricer":
        from pricer.read.serving import Pricer

        return Pricer
    if name == "Recipe":
        from pricer.read.recipe import Recipe

        return Recipe
    raise AttributeError(f"module 'pricer' has no attribute {name!r}")
