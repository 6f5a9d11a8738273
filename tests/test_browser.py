"""What a person sees: the catalog and a model page in a real headless Chromium.

Needs Debian's /usr/bin/chromium and the playwright Python package (used only as a
driver; it never downloads a browser): run `scripts/install-browser`. Screenshots land in
`test-artifacts/`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from test_registry_catalog import EVIL_README, model_wheel, upload

from support import REPO, Registry

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = []
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        missing.append(CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright Python package")
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: run scripts/install-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_a_person_browses_filters_and_opens_a_model(
    browser: Any, registry: Registry, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    upload(registry, model_wheel(dist, "house-prices", "1.0", tags=("tabular",)))
    upload(registry, model_wheel(dist, "house-prices", "1.1", tags=("tabular",)))
    upload(registry, model_wheel(dist, "fraud-net", "0.9", task="classification", tags=("nlp",)))
    upload(registry, model_wheel(dist, "fraud-net", "1.0", task="classification",
                                 tags=("nlp",), readme=EVIL_README))  # fmt: skip
    url = f"{registry.url}/api/v1/models/fraud-net"
    assert requests.put(f"{url}/stages/production", json={"version": "0.9"}).ok
    assert requests.put(f"{url}/versions/1.0/yank", json={"reason": "leaks labels"}).ok
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(f"{registry.url}/", wait_until="load")
    page.wait_for_timeout(300)  # let any (forbidden) script a page might carry try to run
    rows = page.locator("tr.model")
    assert rows.count() == 2
    table = page.locator("#models").inner_text()
    assert "house-prices" in table and "1.1" in table and "fraud-net" in table
    assert "production: 0.9" in table
    page.screenshot(path=str(ARTIFACTS / "catalog.png"), full_page=True)

    page.fill("input[name=q]", "classification")
    page.click("button[type=submit]")
    page.wait_for_load_state("load")
    assert "q=classification" in page.url
    assert page.locator("tr.model").count() == 1
    assert page.locator("tr.model").inner_text().startswith("fraud-net")
    page.screenshot(path=str(ARTIFACTS / "catalog-filtered.png"), full_page=True)

    page.click("text=fraud-net")
    page.wait_for_load_state("load")
    page.wait_for_timeout(300)
    assert page.url.endswith("/models/fraud-net/")
    text = page.locator("body").inner_text()
    assert "fraud-net" in page.locator("h1").first.inner_text()
    assert "yanked: leaks labels" in text
    assert f"pip install fraud-net==0.9 --index-url {registry.url}/simple/" in text
    assert f"pip install fraud-net --index-url {registry.url}/stages/production/simple/" in text
    versions = page.locator("tr.version").all_inner_texts()
    assert versions[0].startswith("1.0") and versions[1].startswith("0.9")
    page.screenshot(path=str(ARTIFACTS / "model-page.png"), full_page=True)

    assert dialogs == []
    assert page.evaluate("typeof window.__xss") == "undefined"
    page.close()


def test_a_hostile_model_card_runs_nothing(
    browser: Any, registry: Registry, tmp_path: Path
) -> None:
    upload(registry, model_wheel(tmp_path / "dist", "fraud-net", "1.0", readme=EVIL_README))
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{registry.url}/models/fraud-net/", wait_until="load")
    page.wait_for_timeout(500)
    card = page.locator(".card").inner_text()
    assert "Fraud detector" in card and "<script>alert('xss')</script>" in card
    assert page.locator(".card script").count() == 0
    assert page.locator(".card a[href^='javascript']").count() == 0
    assert dialogs == []
    page.screenshot(path=str(ARTIFACTS / "model-card.png"), full_page=True)
    page.close()


def test_the_metrics_of_every_version_are_visible_side_by_side(
    browser: Any, registry: Registry, tmp_path: Path
) -> None:
    dist = tmp_path / "dist"
    for version, auc in (("1.0", 0.71), ("1.1", 0.78), ("1.2", 0.75)):
        card = {
            "metrics": {"auc": {"value": auc, "better": "higher"}},
            "dataset": {"name": "claims", "version": "2026-11"},
            "lineage": {"vcs": "git", "commit": f"{version.replace('.', '')}" * 20,
                        "dirty": False, "build_time": "2026-11-30T12:00:00Z",
                        "framework": {"name": "scikit-learn", "version": "1.5.2"}},
        }  # fmt: skip
        upload(registry, model_wheel(dist, "claims-model", version, card=card))
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{registry.url}/?sort=metric:auc", wait_until="load")
    assert page.locator("tr.model").first.inner_text().startswith("claims-model")
    page.goto(f"{registry.url}/models/claims-model/", wait_until="load")
    table = page.locator("#metrics")
    table.scroll_into_view_if_needed()
    assert table.is_visible()
    box = table.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 20
    cells = page.locator('#metrics tr[data-metric="auc"] td').all_inner_texts()
    assert cells == ["0.75", "0.78", "0.71"]  # newest version first
    assert "scikit-learn 1.5.2" in table.inner_text() and "claims 2026-11" in table.inner_text()
    chart = page.locator("svg.metric-chart")
    assert chart.count() == 1 and chart.is_visible()
    chart_box = chart.bounding_box()
    assert chart_box is not None and chart_box["width"] > 100 and chart_box["height"] > 40
    assert page.locator("svg.metric-chart circle").count() == 3
    shot = ARTIFACTS / "model-metrics.png"
    table.screenshot(path=str(shot))
    assert shot.stat().st_size > 1000
    page.screenshot(path=str(ARTIFACTS / "model-metrics-page.png"), full_page=True)
    page.close()
