"""Raw records to tokenized batches: the Amazon Reviews 2023 records and other sources, the
categories, the curation rules and the curation with its accounting, the splits, the prompt,
products a user types, the batches, and the LightningDataModule (`module.PriceDataModule`).

May import: `pricer.base`, `pricer.hub_calls`, `pricer.options`, `pricer.files`.
"""
