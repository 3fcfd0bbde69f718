"""The Hugging Face Hub. `calls` is the one module that talks to the Hub (downloads, uploads,
the offline errors): every stage may import it, and it imports nothing else from pricer. The
rest is what a run publishes: the model and dataset cards, staging and publishing
(`publish.HubPublisher`), and the Space's settings, staging and deploy.

May import (all but `calls`): `pricer.read`, `pricer.data`, `pricer.base`, `pricer.options`,
`pricer.files`.
"""
