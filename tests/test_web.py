"""The web page, driven in a real headless Chromium (Debian's `chromium`, through Playwright).

Skipped, with the reason shown, where no Chromium is installed (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from genome_index.api import GenomeIndex
from genome_index.io.fasta import read_genome
from genome_index.server.app import create_app
from tests.helpers import EXAMPLES, copy_store, free_port, simulate_reads

pytestmark = pytest.mark.slow  # a real headless browser: seconds each

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or set CHROMIUM=/path/to/it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def site(nt_tiny_store: Path, tmp_path_factory) -> Iterator[str]:
    index = GenomeIndex.open(copy_store(nt_tiny_store, tmp_path_factory.mktemp("web")))
    compare = tmp_path_factory.mktemp("compare")
    index.compare(compare)
    port = free_port()
    with index.searcher(micro_batch=True) as searcher:
        app = create_app(index, searcher, compare_dir=compare)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(timeout=10)


def test_paste_a_fragment_see_its_genome_first_and_follow_the_link(browser, site: str) -> None:
    page = browser.new_page()
    page.goto(site + "/")
    page.wait_for_function("document.getElementById('store').textContent.includes('4 genomes')")
    assert "nt-tiny" in page.inner_text("#store")
    assert page.locator("#figure-list img").count() >= 2  # the compare heatmap and PCA
    page.fill("#fasta", (EXAMPLES / "query.fa").read_text())
    page.fill("#k", "4")
    page.click("#submit")
    page.wait_for_selector("#hits tbody tr.hit")
    rows = page.locator("#hits tbody tr.hit")
    assert rows.count() == 4
    first = rows.nth(0).locator("td")
    assert first.nth(0).inner_text() == "1" and first.nth(1).inner_text() == "DSM20231"
    assert first.nth(2).inner_text() == "1.0000" and "50,001-70,000 (+)" in first.nth(4).inner_text()
    cells = first.all_inner_texts()
    decimals = {len(cells[i].split(".")[1]) for i in (2, 3, 5, 6, 7) if cells[i]}
    assert decimals == {4}  # identity, coverage, score, containment and ANI alike
    assert "4 hits" in page.inner_text("#status")
    rows.nth(0).locator("a.genome-link").click()
    page.wait_for_function("document.getElementById('genome-name').textContent === 'DSM20231'")
    assert page.locator("#search-view").is_hidden()
    assert "CP104478.1:600000-750000" in page.inner_text("#records")
    assert "150,000" in page.inner_text("#records")
    page.go_back()
    page.wait_for_selector("#search-view", state="visible")
    page.close()


def test_a_bad_query_shows_its_error_on_the_page(browser, site: str) -> None:
    page = browser.new_page()
    page.goto(site + "/")
    page.fill("#fasta", ">protein\nMKVLLEFIPQRSTWYMKVLLEFIPQ")
    page.click("#submit")
    page.wait_for_function("document.getElementById('status').className === 'error'")
    assert "protein" in page.inner_text("#status") and page.locator("#hits").is_hidden()
    page.close()


def test_gather_a_sample_of_reads_on_the_page(browser, site: str) -> None:
    """Pasted FASTQ with the gather task: the genome the reads come from, its abundance, and a
    summary in the status line."""
    rng = np.random.default_rng(4)
    records = [r.sequence for r in read_genome(EXAMPLES / "genomes" / "BPH2003.fna.gz").records]
    reads = simulate_reads(records, 1500, rng)
    page = browser.new_page()
    page.goto(site + "/")
    fastq = "".join(f"@r{i}\n{row.tobytes().decode()}\n+\n{'F' * 150}\n" for i, row in enumerate(reads))
    page.eval_on_selector("#fasta", "(box, text) => { box.value = text; }", fastq)  # as a chosen file fills it
    page.select_option("#task", "gather")
    page.click("#submit")
    page.wait_for_selector("#hits tbody tr.hit")
    cells = page.locator("#hits tbody tr.hit").nth(0).locator("td").all_inner_texts()
    assert cells[:2] == ["1", "BPH2003"] and cells[5] == "1.0000"  # abundance: every mapped base
    assert "1 genome(s) in 1,500 reads or contigs" in page.inner_text("#status")
    assert page.locator("#hits thead th").nth(5).inner_text() == "abundance"
    page.close()


def fetched(page, url: str) -> str:
    return page.evaluate("async (url) => (await fetch(url)).text()", url)


def test_a_hits_region_and_a_genome_come_as_fasta(browser, site: str) -> None:
    page = browser.new_page()
    page.goto(site + "/")
    page.wait_for_function("document.getElementById('store').textContent.includes('genomes')")
    page.fill("#fasta", (EXAMPLES / "query.fa").read_text())
    page.click("#submit")
    page.wait_for_selector("#hits tbody tr.hit")
    link = page.locator("#hits tbody tr.hit").nth(0).locator("a.fasta-link")
    region = fetched(page, link.get_attribute("href"))
    assert region.startswith(">CP104478.1:600000-750000:50001-70000\n")
    assert len(region.replace("\n", "")) - len(region.split("\n")[0]) == 20_000
    page.locator("#hits tbody tr.hit").nth(0).locator("a.genome-link").click()
    page.wait_for_function("document.getElementById('genome-name').textContent === 'DSM20231'")
    facts = page.inner_text("#genome-facts")
    assert "DSM20231.fna.gz" in facts and "/" not in facts  # the file's name, not the server's path
    added = page.locator("#genome-facts dd").nth(6).inner_text()
    assert len(added) == 16 and added[4] == "-" and added[10] == " "  # 2026-12-06 05:12, no microseconds
    whole = fetched(page, page.locator("#genome-fasta a").get_attribute("href"))
    assert whole.startswith(">CP104478.1:600000-750000 DSM20231") and len(whole) > 150_000  # its one record, whole
    page.close()


def test_the_page_fits_a_phone_and_figures_keep_their_size(browser, site: str) -> None:
    page = browser.new_page(viewport={"width": 420, "height": 800})
    page.goto(site + "/")
    page.wait_for_function("document.getElementById('store').textContent.includes('genomes')")
    page.fill("#fasta", (EXAMPLES / "query.fa").read_text())
    page.click("#submit")
    page.wait_for_selector("#hits tbody tr.hit")
    assert page.evaluate("document.documentElement.scrollWidth") <= 420  # the header spans what the page spans
    assert page.evaluate("document.getElementById('hits-wrap').scrollWidth") > 420  # the table scrolls in place
    page.wait_for_function("[...document.querySelectorAll('#figure-list img')].every((i) => i.complete)")
    sizes = page.evaluate("[...document.querySelectorAll('#figure-list img')].map((i) => [i.width, i.naturalWidth])")
    assert sizes and all(shown == natural for shown, natural in sizes)
    page.close()


def test_the_api_docs_and_the_icon_need_no_network(browser, site: str) -> None:
    """Swagger UI came from a CDN: offline, /docs was a blank page."""
    context = browser.new_context()
    refused: list[str] = []

    def offline(route) -> None:  # every request that would leave this machine fails, as offline
        refused.append(route.request.url)
        route.abort()

    context.route(lambda url: not url.startswith(site), offline)
    page = context.new_page()
    page.goto(site + "/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "genome-index" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".opblock-summary-path").count() >= 5 and refused == []
    icon = page.request.get(site + "/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    context.close()
