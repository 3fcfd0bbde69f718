"""The base LLM: where its files are (a Hub id, a local folder or a GGUF file), its tokenizer,
loading it in 4 bits, the quantization and LoRA settings, and the precision a GPU's compute
capability allows.

May import: `pricer.hub_calls`, `pricer.options`, `pricer.files`.
"""
