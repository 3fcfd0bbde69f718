"""pricer's Space: type a product's title and description, get its price and how sure it is.

Run locally with a trained run's adapter:
    PRICER_BASE_MODEL=<base> PRICER_ADAPTER=runs/<run>/adapter python space/app.py
The model is loaded once at start; Gradio serves on its usual port (or GRADIO_SERVER_PORT).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gradio as gr

from pricer.cli.logs import quiet_logs
from pricer.hub.space import SpaceSettings, StartUpError, example_label, start_up_limits
from pricer.read.serving import Pricer, ProductError, Quote

HERE = Path(__file__).resolve().parent

EMPTY_CHART = {"price range": [], "probability": []}
BIN_EDGES = (0, 10, 20, 50, 100, 200, 500, 1000)


def bin_labels(edges: tuple[float, ...] = BIN_EDGES) -> list[str]:
    """ "<$10", "$10-20", ..., "$500+": the chart's price ranges, in order."""
    inner = [f"${low:g}-{high:g}" for low, high in zip(edges[1:-2], edges[2:-1], strict=True)]
    return [f"<${edges[1]:g}", *inner, f"${edges[-2]:g}+"]


def bins(quote: Quote, edges: tuple[float, ...] = BIN_EDGES) -> list[tuple[str, float]]:
    """The quote's probability in each price range (where the blend moved its prices)."""
    probs, prices = quote.distribution.normalised, quote.prices
    return [
        (label, float(probs[(prices >= low) & (prices < high)].sum()))
        for label, low, high in zip(bin_labels(edges), edges[:-1], edges[1:], strict=True)
    ]


def bins_frame(quote: Quote):
    import numpy as np
    import pandas as pd

    rows = bins(quote)
    return pd.DataFrame(
        {"price range": [r for r, _ in rows], "probability": np.round([p for _, p in rows], 4)}
    )


def interval_text(quote: Quote, coverage: float) -> str:
    return f"{coverage:.0%} likely between ${quote.low:,.0f} and ${quote.high:,.0f}"


def neighbors_text(quote: Quote, asked: int = 0) -> str:
    """The similar training items the prompt showed the model, as a short Markdown list ("" for
    an adapter trained without them): a user sees what the price leaned on. With `asked`, the
    adapter's count, it says when fewer share a word with the product."""
    lines = [f"- {title}: ${price:,.0f}" for title, price in quote.neighbors]
    if asked and not lines:
        return "_No training item shares a word with this product: it was priced from its own text alone._"
    if asked and len(lines) < asked:
        some = (
            "Only one training item shares" if len(lines) == 1 else f"Only {len(lines)} training items share"
        )
        note = f"_{some} a word with this product._"
        return "\n".join(["**Similar items it was shown, with their prices:**", *lines, "", note])
    if not lines:
        return ""
    return "\n".join(["**Similar items it was shown, with their prices:**", *lines])


class PricerBlocks(gr.Blocks):
    """The page's Blocks, with /price taking its optional inputs as optional over plain HTTP too:
    a body that leaves features or details out (gradio_client fills them) gets their defaults,
    "", instead of gradio's "not enough input values" and an empty error."""

    def validate_inputs(self, block_fn, inputs: list) -> None:
        if getattr(block_fn, "api_name", None) == "price" and len(inputs) < len(block_fn.inputs):
            inputs.extend([""] * (len(block_fn.inputs) - len(inputs)))
        super().validate_inputs(block_fn, inputs)


def build_demo(
    settings: SpaceSettings, pricer: Pricer, concurrency: int = 1, queue_size: int = 32
) -> gr.Blocks:
    """The page and the /price API; `concurrency` requests priced at once, `queue_size` waiting."""
    coverage = pricer.coverage

    def price_page(title: str, description: str, features: str, details: str):
        """The page's handler: what cannot be priced is a friendly message in the page."""
        try:
            quote = pricer.quote(title, description, features, details)
        except ProductError as error:
            return f"⚠️ {error}", "", gr.update(value=None)
        shown = neighbors_text(quote, pricer.neighbors)
        return (
            f"## ${quote.price:,.0f}",
            interval_text(quote, coverage) + (f"\n\n{shown}" if shown else ""),
            gr.update(value=bins_frame(quote)),
        )

    def price_api(title: str, description: str = "", features: str = "", details: str = "") -> dict:
        """Price a product from its title and description (features and details, one per line,
        are optional). Returns the price, the low and high ends of its interval, and the
        interval's probability. Input that cannot be priced is an error naming the field."""
        try:
            quote = pricer.quote(title, description, features, details)
        except ProductError as error:
            raise gr.Error(str(error), print_exception=False) from None
        answer = {"price": round(quote.price, 2), "low": quote.low, "high": quote.high, "coverage": coverage}
        if quote.neighbors:  # the similar training items the prompt showed
            answer["neighbors"] = [{"title": t, "price": p} for t, p in quote.neighbors]
        return answer

    with PricerBlocks(title="pricer: what does it cost?") as demo:
        gr.Markdown("# What does it cost?\nDescribe a product and a fine-tuned LLM prices it.")
        with gr.Row():
            with gr.Column(scale=3):
                title = gr.Textbox(label="Title", placeholder="e.g. Stainless steel electric kettle, 1.7 L")
                description = gr.Textbox(label="Description", lines=5, placeholder="What it is, what it does")
                with gr.Accordion("Features and details (optional)", open=False):
                    features = gr.Textbox(label="Features", lines=3, placeholder="One per line")
                    details = gr.Textbox(
                        label="Details", lines=3, placeholder="Brand: Acme\nWeight: 2 pounds"
                    )
                button = gr.Button("Price it", variant="primary", elem_id="price-button")
            with gr.Column(scale=2):
                predicted = gr.Markdown(elem_id="predicted-price")
                interval = gr.Markdown(elem_id="price-interval")
                chart = gr.BarPlot(
                    value=None,
                    x="price range",
                    y="probability",
                    sort=bin_labels(),
                    title="How likely each price range is",
                    height=260,
                    x_label_angle=-40,  # the range labels overlap side by side at phone width
                    elem_id="price-chart",
                )
        if settings.examples:
            gr.Examples(
                examples=[[e["title"], e["description"], "", ""] for e in settings.examples],
                inputs=[title, description, features, details],
                label="Try a product from the test split",
                example_labels=[example_label(e["title"]) for e in settings.examples],
                fn=price_page,
                outputs=[predicted, interval, chart],
                run_on_click=True,
                cache_examples=False,
            )
        gr.Markdown(settings.about(), elem_id="about-model")
        inputs = [title, description, features, details]
        outputs = [predicted, interval, chart]
        # The page's events are not the API; the API is one endpoint, /price, that answers in
        # numbers and makes bad input an error.
        button.click(price_page, inputs, outputs, api_visibility="private", concurrency_limit=concurrency)
        description.submit(
            price_page, inputs, outputs, api_visibility="private", concurrency_limit=concurrency
        )
        gr.api(price_api, api_name="price", concurrency_limit=concurrency)
    return demo.queue(max_size=queue_size)


def main() -> None:
    quiet_logs()
    try:
        limits = start_up_limits(os.environ)
        settings = SpaceSettings.load(HERE)
        if not settings.adapter and not settings.base_override:
            raise StartUpError(
                "no adapter to serve: set PRICER_ADAPTER to a trained run's adapter folder "
                "(runs/<run>/adapter) or its Hub id, and PRICER_BASE_MODEL when its base is not here "
                "(PRICER_BASE_MODEL alone serves that base untrained)"
            )
        pricer = settings.pricer()  # the adapter's own recipe: what its run measured
    except (StartUpError, ValueError, OSError) as error:  # recipes, files, models: said in one line
        text = " ".join(str(error).split()) or type(error).__name__
        print(f"pricer space: error: {text}", file=sys.stderr)
        raise SystemExit(2) from None
    build_demo(settings, pricer, *limits).launch()  # honours GRADIO_SERVER_NAME and GRADIO_SERVER_PORT


if __name__ == "__main__":
    main()
