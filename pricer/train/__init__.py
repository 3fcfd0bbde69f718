"""Training: the LightningModule (`model.PriceModel`, with its passes, reading steps, resume
hooks and loss beside it), the end-of-fit callbacks (`end_of_fit`), the batch-size search callback
(`batch_size.FitBatchSize`), the paged optimizer state, the learning-rate schedule, the random
state, and stop requests (SIGTERM, Ctrl-C) honoured between phases.

May import: `pricer.read`, `pricer.data`, `pricer.base`, `pricer.hub_calls`, `pricer.options`,
`pricer.files`.
"""
