"""What a run publishes to the Hugging Face Hub: the model and dataset cards, staging and
publishing (`publish.HubPublisher`), and the Space's settings, staging and deploy. The calls
that reach the Hub are `pricer.hub_calls`'s, which every stage shares.

May import: `pricer.read`, `pricer.data`, `pricer.base`, `pricer.hub_calls`, `pricer.options`,
`pricer.files`.
"""
