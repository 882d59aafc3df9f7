"""The UI in a real browser, served by `dagster dev` (webserver and daemon) over the instance `arrival run`
recorded partition baseline_v1|42 into.

- The asset pages show what a newcomer reads: the Columns table of s3_bucket_counts_5B with its rules as the
  contract writes them (`count_N` ">= 0", a pattern's `\\|`), the row count, the S2 and S3 pictures (PNGs inside
  Markdown, first in the metadata table), and the absent optional input saying ABSENT.
- "Execute" on the Checks tab of s3_bucket_counts_5B gives the materialised partition a new evaluation of each
  check: Dagster 1.13's UI disables the selected check's own "Execute" for a partitioned check and sends "Execute
  all" as a run with no partition, which evaluates the checks of every materialised partition
  (docs/usage.md). The new evaluation is read from the check's Execution history and cross-checked through
  GraphQL.

Screenshots are saved and copied to /tmp/arrival_browser_*.png to look at. Needs Debian's chromium
(`apt-get install chromium`, which `.ci/run` installs when it can) and the playwright package of the `dev`
extra; skips with the reason when either is missing."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from webserver_lib import free_port, graphql, wait_until_serving

from arrival_core.contracts import PROJECT_ROOT
from arrival_core.world import WorldInfo, create_world

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
CHECK = "count_corridor"  # the check of ASSET whose page the Execute test opens
RUN_SECONDS = 300
CHECKS_OF = """
query Checks($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) { ... on AssetNode { assetChecksOrError { ... on AssetChecks {
    checks { name } } } } }
}
"""
EXECUTIONS = """
query Executions($assetKey: AssetKeyInput!, $checkName: String!, $partition: String) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, partition: $partition, limit: 20) {
    runId status partition evaluation { timestamp partition success }
  }
}
"""
RUNS = "query Runs { runsOrError(limit: 50) { ... on Runs { results { runId status } } } }"


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


@dataclass(frozen=True)
class Served:
    """The UI `dagster dev` serves over a tiny world whose partition PARTITION `arrival run` materialised."""

    port: int
    world: WorldInfo
    shots: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory, request) -> Iterator[Served]:
    """Materialise PARTITION with `arrival run`, then serve the UI and run queued runs with `dagster dev`; the
    screenshots of the module's tests are copied to /tmp when it ends."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not importable: pip install -e '.[dev]'")
    tmp_path = tmp_path_factory.mktemp("browser")
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
    log = (tmp_path / "dagster_dev.log").open("wb")
    request.addfinalizer(log.close)
    # `dagster dev`, as the README starts the UI: its daemon launches the runs the UI queues.
    server = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    request.addfinalizer(lambda: _stop_group(server))
    wait_until_serving(port, server)
    # The instance remembers that the first-visit "Join the Dagster community" dialog was seen.
    assert graphql(port, "mutation { setNuxSeen }")["data"]["setNuxSeen"] is True
    shots = tmp_path / "screenshots"
    shots.mkdir()
    yield Served(port, world, shots)
    for shot in sorted(shots.iterdir()):
        shutil.copyfile(shot, SCREENSHOT_COPY / f"arrival_browser_{shot.name}")
    print(f"screenshots: {', '.join(str(s) for s in sorted(shots.iterdir()))} (copied to {SCREENSHOT_COPY})")


@contextmanager
def browser_page() -> Iterator:
    """A page of a fresh headless Chromium, 1400 x 1000, waiting up to UI_TIMEOUT_MS for what it looks for."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


@pytest.mark.slow
def test_asset_pages_show_column_rules_pictures_and_an_absent_input(served):
    from playwright.sync_api import expect

    port, world, shots = served.port, served.world, served.shots
    with browser_page() as page:
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


def _executions(port: int, check: str, partition: str) -> list[dict]:
    """The executions of a check of ASSET for one partition ("": those without one), newest first (GraphQL)."""
    variables = {"assetKey": {"path": [ASSET]}, "checkName": check, "partition": partition}
    return graphql(port, EXECUTIONS, variables)["data"]["assetCheckExecutions"]


def _finished_run(port: int, short_id: str) -> tuple[str, str]:
    """The full id and final status of the run whose id starts with `short_id`, once it has finished."""
    deadline, seen = time.monotonic() + RUN_SECONDS, None
    while time.monotonic() < deadline:
        runs = graphql(port, RUNS)["data"]["runsOrError"]["results"]
        seen = next((r for r in runs if r["runId"].startswith(short_id)), None)
        if seen and seen["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return seen["runId"], seen["status"]
        time.sleep(1)
    raise AssertionError(f"run {short_id} did not finish within {RUN_SECONDS} s (last seen: {seen})")


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_execute_on_the_checks_tab_gives_the_materialised_partition_a_new_evaluation(served):
    from playwright.sync_api import expect

    port, shots = served.port, served.shots
    checks = graphql(port, CHECKS_OF, {"assetKey": {"path": [ASSET]}}
                     )["data"]["assetNodeOrError"]["assetChecksOrError"]["checks"]
    names = sorted(c["name"] for c in checks)
    assert CHECK in names and len(names) == 6, names
    # Each check has one evaluation for the partition so far: the one `arrival run` recorded.
    before = {name: _executions(port, name, PARTITION) for name in names}
    assert all(len(b) == 1 and b[0]["status"] == "SUCCEEDED" for b in before.values()), before
    first_run = before[CHECK][0]["runId"]
    files = _files(served.world.root)

    with browser_page() as page:
        page.goto(f"http://127.0.0.1:{port}/assets/{ASSET}?view=checks&checkDetail={CHECK}")
        execute_all = page.get_by_role("button", name="Execute all")
        expect(execute_all).to_be_enabled()
        # Dagster 1.13's UI offers a partitioned check no "Execute" of its own ("not yet supported"), and no
        # partition picker: "Execute all" sends its checks as a run without a partition.
        expect(page.locator("button", has_text=re.compile(r"^\s*Execute\s*$"))).to_be_disabled()
        page.screenshot(path=str(shots / "checks_tab.png"), full_page=True)
        execute_all.click()
        toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
        short_id = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
        run_id, status = _finished_run(port, short_id)
        assert status == "SUCCESS", (run_id, status)
        assert run_id != first_run

        # The check's Execution history (status, evaluation → its run, target materialisation → its run,
        # partition, ...): the partition's newest evaluation is this run's, passed, about the materialisation
        # `arrival run` made; the evaluation `arrival run` recorded is still there beneath it.
        page.goto(f"http://127.0.0.1:{port}/assets/{ASSET}?view=checks&checkDetail={CHECK}")
        page.get_by_text("Execution history", exact=True).click()
        rows = page.locator("tbody tr").filter(
            has=page.locator("td", has_text=re.compile(rf"^\s*{re.escape(PARTITION)}\s*$")))
        expect(rows).to_have_count(2)
        newest, first = rows.nth(0).locator("td"), rows.nth(1).locator("td")
        expect(newest.nth(0)).to_have_text(re.compile(r"^\s*Passed\s*$"))
        expect(newest.nth(1).locator("a")).to_have_attribute("href", re.compile(rf"^/runs/{run_id}\?"))
        expect(newest.nth(2).locator("a")).to_have_attribute("href", f"/runs/{first_run}")
        expect(first.nth(1).locator("a")).to_have_attribute("href", re.compile(rf"^/runs/{first_run}\?"))
        page.screenshot(path=str(shots / "checks_executed.png"), full_page=True)

    # Through GraphQL: every check of the asset has a new passed evaluation for the partition, from this run and
    # later than the first; the run's planned unpartitioned execution is left skipped; no file was written.
    for name in names:
        after = _executions(port, name, PARTITION)
        assert [a["runId"] for a in after] == [run_id, before[name][0]["runId"]], (name, after)
        new, old = after[0], before[name][0]
        assert new["status"] == "SUCCEEDED" and new["evaluation"]["success"] is True, (name, new)
        assert new["evaluation"]["partition"] == PARTITION
        assert new["evaluation"]["timestamp"] > old["evaluation"]["timestamp"]
        unpartitioned = [e for e in _executions(port, name, "") if e["runId"] == run_id]
        assert [e["status"] for e in unpartitioned] == ["SKIPPED"], (name, unpartitioned)
    assert _files(served.world.root) == files
