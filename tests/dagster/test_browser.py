"""The UI in a real browser: after `arrival run`, the asset page of s3_bucket_counts_5B for partition
baseline_v1|42 shows its row count and draws the `plot` metadata entry (a PNG inside Markdown).

Needs Debian's chromium (`apt-get install chromium`, which `.ci/run` installs when it can) and the
playwright package of the `dev` extra; skips with the reason when either is missing."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from webserver_lib import free_port, graphql, wait_until_serving

from arrival_core.contracts import PROJECT_ROOT
from arrival_core.world import create_world

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BIN = Path(sys.executable).parent
UI_TIMEOUT_MS = 90_000
SCREENSHOT_COPY = Path("/tmp/arrival_browser_screenshot.png")
PARTITION = "baseline_v1|42"
ASSET = "s3_bucket_counts_5B"


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the webserver and its code server: our own child's process group (started in its own session)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _value_of(page, name: str):
    """The value cell of the metadata table row whose name cell is exactly `name`."""
    row = page.locator("tr").filter(has=page.locator("td", has_text=re.compile(rf"^{re.escape(name)}$")))
    return row.locator("td").nth(1)


@pytest.mark.slow
def test_asset_page_shows_the_row_count_and_draws_the_plot(tmp_path, request):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not importable: pip install -e '.[dev]'")
    from playwright.sync_api import sync_playwright

    world = create_world("tiny", tmp_path / "w", seeds=(42,))
    home = tmp_path / "dagster_home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "ARRIVAL_RUN_ROOT": str(world.root)}
    run = subprocess.run(
        [str(BIN / "arrival"), "run", "--quiet", "--seed", "42", "--scenario", "baseline_v1", "--root",
         str(world.root)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{PARTITION}  PASS" in run.stdout

    port = free_port()
    log = (tmp_path / "webserver.log").open("wb")
    request.addfinalizer(log.close)
    server = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    request.addfinalizer(lambda: _stop_group(server))
    wait_until_serving(port, server)
    # The instance remembers that the first-visit "Join the Dagster community" dialog was seen.
    assert graphql(port, "mutation { setNuxSeen }")["data"]["setNuxSeen"] is True

    shots = tmp_path / "screenshots"
    shots.mkdir()
    url = f"http://127.0.0.1:{port}/assets/{ASSET}?view=partitions&partition={PARTITION.replace('|', '%7C')}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(url)

            # The partition's latest materialisation, its row count (100 entities x 168 hourly buckets).
            page.get_by_text(PARTITION, exact=True).filter(visible=True).first.wait_for()
            row_count = _value_of(page, "dagster/row_count")
            row_count.wait_for()
            assert world.entities * world.buckets == 16_800
            assert int(row_count.inner_text().strip().replace(",", "")) == 16_800
            page.screenshot(path=str(shots / "asset_page.png"), full_page=True)

            # The `plot` Markdown entry opens in a dialog and draws its inline PNG.
            _value_of(page, "plot").get_by_text("[Show Markdown]").click()
            dialog = page.get_by_role("dialog").filter(has_text="plot")
            image = dialog.locator(".dagster-markdown img").first
            image.wait_for()
            assert image.get_attribute("src").startswith("data:image/png;base64,")
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert width > 100 and height > 100
            shot = shots / "asset_page_plot.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    shutil.copyfile(shot, SCREENSHOT_COPY)
    print(f"screenshots: {shots / 'asset_page.png'}, {shot} (copied to {SCREENSHOT_COPY})")
