"""The UI in a real browser: after `arrival run`, the asset pages for partition baseline_v1|42 show what a
newcomer reads — the Columns table of s3_bucket_counts_5B with its rules as the contract writes them
(`count_N` ">= 0", a pattern's `\\|`), the row count, the S2 and S3 pictures (PNGs inside Markdown, first in the
metadata table; screenshots are saved and copied to /tmp/arrival_browser_*.png to look at), and the absent
optional input saying ABSENT.

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
SCREENSHOT_COPY = Path("/tmp")  # arrival_browser_<name>.png
PARTITION = "baseline_v1|42"
ASSET = "s3_bucket_counts_5B"
PICTURES = ("s2_realised_intensity_5B", "s3_bucket_counts_5B")
ABSENT_INPUT = "merchant_zone_scenario_utc_5A"


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


def _row_of(page, name: str, flags: int = 0):
    """The table row whose first cell is exactly `name` (a metadata entry, a column)."""
    return page.locator("tr").filter(
        has=page.locator("td", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$", flags))).first


def _value_of(page, name: str):
    """The value cell of the metadata table row whose name cell is exactly `name`."""
    return _row_of(page, name).locator("td").nth(1)


def _partition_url(port: int, asset: str) -> str:
    return f"http://127.0.0.1:{port}/assets/{asset}?view=partitions&partition={PARTITION.replace('|', '%7C')}"


def _open_picture(page, asset: str, shot: Path) -> tuple[int, int]:
    """Open the `plot` entry of the asset's partition page shown, wait for its PNG, screenshot the dialog; its
    size."""
    _value_of(page, "plot").get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").filter(has_text="plot")
    image = dialog.locator(".dagster-markdown img").first
    image.wait_for()
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert image.get_attribute("alt").startswith(f"{asset} {PARTITION}: ")  # this asset's picture, titled alike
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight, img.clientWidth]")
    assert natural[2] == natural[0]  # shown at its own size: the fonts are as legible as drawn
    dialog.get_by_text("buckets", exact=True).wait_for()  # the table of what the picture shows, beneath it
    dialog.screenshot(path=str(shot))
    dialog.get_by_role("button", name="Close").click()
    return natural[0], natural[1]


@pytest.mark.slow
def test_asset_pages_show_column_rules_pictures_and_an_absent_input(tmp_path, request):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not importable: pip install -e '.[dev]'")
    from playwright.sync_api import expect, sync_playwright

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
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)

            # The Columns table shows each rule as the contract writes it (Markdown would make ">= 0" a quote).
            page.goto(f"http://127.0.0.1:{port}/assets/{ASSET}?view=overview")
            # (the UI shows column names in lower case: count_N reads "count_n")
            count_n = _row_of(page, "count_N", re.IGNORECASE).locator("td").nth(2)
            # (the row shows before its description fills in: wait for the text, up to the UI timeout)
            expect(count_n).to_have_text(re.compile(r"^\s*>= 0\s*$"), timeout=UI_TIMEOUT_MS)
            group_id = _row_of(page, "group_id").locator("td").nth(2)
            expect(group_id).to_contain_text(r"^(baseline|stress)\|(office_hours|", timeout=UI_TIMEOUT_MS)
            page.screenshot(path=str(shots / "columns.png"), full_page=True)
            _row_of(page, "count_N", re.IGNORECASE).screenshot(path=str(shots / "columns_count_n.png"))

            # The partition's latest materialisation: its row count (100 entities x 168 hourly buckets), the
            # picture as the first metadata entry.
            page.goto(_partition_url(port, ASSET))
            page.get_by_text(PARTITION, exact=True).filter(visible=True).first.wait_for()
            row_count = _value_of(page, "dagster/row_count")
            row_count.wait_for()
            assert world.entities * world.buckets == 16_800
            assert int(row_count.inner_text().strip().replace(",", "")) == 16_800
            names = [n.strip() for n in page.locator("tr td:first-child").all_inner_texts()]
            assert names[0] == "plot", names
            page.screenshot(path=str(shots / "asset_page.png"), full_page=True)

            # Each picture opens in a dialog at its full width (at least 900 px), with its table beneath.
            for asset in PICTURES:
                page.goto(_partition_url(port, asset))
                _value_of(page, "plot").wait_for()
                width, height = _open_picture(page, asset, shots / f"{asset}_plot.png")
                assert width >= 900 and height >= 500

            # The optional input this world lacks says ABSENT, not just "Materialized".
            page.goto(_partition_url(port, ABSENT_INPUT))
            status = _value_of(page, "status")
            expect(status).to_contain_text(f"ABSENT: optional input {ABSENT_INPUT} is not in this world",
                                           timeout=UI_TIMEOUT_MS)
        finally:
            browser.close()
    for shot in sorted(shots.iterdir()):
        shutil.copyfile(shot, SCREENSHOT_COPY / f"arrival_browser_{shot.name}")
    print(f"screenshots: {', '.join(str(s) for s in sorted(shots.iterdir()))} (copied to {SCREENSHOT_COPY})")
