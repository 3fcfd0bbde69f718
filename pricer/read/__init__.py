"""A model to prices and measures: the price reader (a price distribution from the digit
tokens), the dense CPU read, the recipe saved beside an adapter (`pricer.json`), `Pricer`
(serving), the blend with the TF-IDF ridge and its nearest neighbours, baselines, metrics, and
test's report callback (`report.PriceReport`).

May import: `pricer.data`, `pricer.base`, `pricer.hub_calls`, `pricer.options`, `pricer.files`.
"""
