"""The staged Space in a real browser: Debian's Chromium, headless, driven by Playwright.

Types a product, presses the button, sees a price, its interval and the similar training items
the model was shown with their prices (the run trained with neighbours in the prompt); clicks an
example; sees the empty-input message. Saves a screenshot to `artifacts/` (or $PRICER_ARTIFACTS).
"""

import os
import re
from pathlib import Path

import pytest

from tests.conftest import REPO, publishing_fit, serve

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ARTIFACTS = Path(os.environ.get("PRICER_ARTIFACTS", REPO / "artifacts"))
expect = None  # playwright's, set when the browser starts
PRICE = re.compile(r"^\s*\$[\d,]+\s*$")
INTERVAL = re.compile(r"^\s*80% likely between \$[\d,]+ and \$[\d,]+")
SHOWN = "Similar items it was shown, with their prices:"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama):
    """conftest's publishing fit (the Space's run, staged by `staged`) with two neighbours in
    every prompt, so the page has them to list."""
    root = tmp_path_factory.mktemp("space-run")
    return publishing_fit(root, tiny_llama, "space", "--data.neighbors", "2")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    global expect
    expect = sync_api.expect
    if not CHROMIUM.is_file():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("PRICER_REQUIRE_BROWSER"):
            pytest.fail(message)  # CI installs it: a skip there would hide a broken Space
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield browser
        browser.close()


def price_it(page, title: str, description: str) -> None:
    """Type a product and press the button."""
    page.get_by_role("textbox", name="Title").fill(title)
    page.get_by_role("textbox", name="Description").fill(description)
    page.locator("#price-button").click()


@pytest.mark.slow
def test_a_person_prices_a_product_in_the_browser(browser, staged, trained, tiny_llama, tmp_path):
    _, run = trained
    env = {"PRICER_BASE_MODEL": tiny_llama, "PRICER_ADAPTER": str(run / "adapter")}
    with serve(staged / "app.py", env, tmp_path / "app.log") as url:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        assert "held-out test products" in page.locator("#about-model").inner_text()

        price, interval = page.locator("#predicted-price"), page.locator("#price-interval")
        # a fridge that shares words with the training fridges ("model", "sturdy", "build")
        typed = ("Acme fridge model 7", "A quiet fridge of sturdy build, easy to clean.")
        price_it(page, *typed)
        expect(price).to_have_text(PRICE, timeout=60_000)  # a pending output also shows a timer
        expect(interval).to_have_text(INTERVAL)
        # beside the price, the training items its prompt showed, as the Pricer retrieves them
        from pricer.read.serving import Pricer

        quote = Pricer.from_adapter(str(run / "adapter"), base_model=tiny_llama).quote(*typed)
        assert len(quote.neighbors) == 2
        expect(interval).to_contain_text(SHOWN)
        for title, cost in quote.neighbors:
            expect(interval).to_contain_text(f"{title}: ${cost:,.0f}")
        page.locator("#price-chart").get_by_text("How likely each price range is").wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "space.png"), full_page=True)

        # a product sharing no word with them is priced from its own text, and the page says so
        price_it(page, "Zzqx", "Wvvy qrrk.")
        expect(interval).to_contain_text("No training item shares a word with this product", timeout=60_000)
        expect(interval).not_to_contain_text(SHOWN)

        price_it(page, "", "")
        expect(price).to_have_text("⚠️ Please enter a product title or description to price.", timeout=60_000)
        expect(interval).to_have_text("")  # no interval and no neighbours for what is not priced

        # one click on an example from the test split fills the form and prices it
        page.get_by_text(re.compile(r"^Fridge model \d+$")).first.click()
        expect(page.get_by_role("textbox", name="Title")).to_have_value(re.compile(r"^Fridge model \d+$"))
        expect(price).to_have_text(PRICE, timeout=60_000)
        expect(interval).to_have_text(INTERVAL)
        page.close()
    assert "Traceback" not in (tmp_path / "app.log").read_text()
