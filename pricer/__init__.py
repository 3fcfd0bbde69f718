"""pricer: fine-tune a 4-bit LoRA LLM to predict a product's price from its text."""

__version__ = "0.1.0"
