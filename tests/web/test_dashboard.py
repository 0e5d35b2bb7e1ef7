"""The dashboard in a real headless Chromium (Debian's, driven by Selenium): it loads, a running
rollout's figures equal the API's, the chart draws, pausing from the page pauses the rollout,
and a viewer sees no controls. Screenshots are saved beside the test's files.

Without Chromium and its driver the test skips, unless ``ROLLOUT_REQUIRE_BROWSER=1`` (CI)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from rollout import access
from rollout.access import Role
from rollout.clock import SYSTEM_CLOCK
from rollout.ledger import Ledger, NewAlert
from rollout.operations import rollout_report
from rollout.sim.pki import Issued
from rollout.sim.profiles import AppleLikeChain
from rollout.web.server import BackgroundServer
from tests.web.support import Served, fleet_holding

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM and DRIVER):
        if os.environ.get("ROLLOUT_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium and chromedriver are required (ROLLOUT_REQUIRE_BROWSER=1)")
        pytest.skip("Chromium or chromedriver is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=webdriver.ChromeService(executable_path=DRIVER), options=options
    )
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: object, check: Callable[[object], object], timeout: float = 15) -> object:
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)  # type: ignore[arg-type]


def sign_in(driver: object, base_url: str, token: str) -> None:
    driver.get(base_url + "/")  # type: ignore[attr-defined]
    field = driver.find_element(By.ID, "token")  # type: ignore[attr-defined]
    field.clear()
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()  # type: ignore[attr-defined]


def stage_texts(driver: object) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#stages tr")  # type: ignore[attr-defined]
    return [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows]


def test_the_dashboard_shows_the_apis_figures_and_pauses_a_rollout(
    browser: object,
    started: Callable[..., BackgroundServer],
    ledger: Ledger,
    device_ca: Issued,
    profile_chain: AppleLikeChain,
    tmp_path: Path,
) -> None:
    server = started()
    web = Served(server.base_url, ledger, device_ca, server)
    now = SYSTEM_CLOCK.now()
    operator, _ = access.issue(ledger, "alice", Role.OPERATOR, actor="t", now=now)
    viewer, _ = access.issue(ledger, "wall-screen", Role.VIEWER, actor="t", now=now)
    _, profile = fleet_holding(web, profile_chain, 6, held_by=2, name="Field App Renewed")
    with ledger.alerts() as store:
        store.raise_new(
            [NewAlert("k", "renewal.missing", "critical", "no renewal for Old App")], now
        )
    spec = {"profile": profile.uuid, "targets": {"all": True}, "stages": ["50%", "100%"]}
    with httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {operator}"}
    ) as c:
        res = c.post("/api/v1/rollouts", params={"start": "true"}, json=spec)
        assert res.status_code == 201, res.text
        rid = res.json()["rollout"]["id"]

    driver = browser
    sign_in(driver, server.base_url, operator)
    wait_for(driver, lambda d: "alice (operator)" in d.find_element(By.ID, "who").text)
    wait_for(driver, lambda d: d.find_element(By.ID, "r-state").text == "running")
    expected = [
        ", ".join(f"{k} {n}" for k, n in s["states"].items()) or "-"
        for s in rollout_report(ledger, rid, SYSTEM_CLOCK.now())["stages"]
    ]
    wait_for(driver, lambda d: stage_texts(d) == expected)
    assert "no renewal for Old App" in driver.find_element(By.ID, "alerts").text  # type: ignore[attr-defined]
    calendar = driver.find_element(By.ID, "calendar").text  # type: ignore[attr-defined]
    assert "Field App Renewed" in calendar and f"{profile.expires_at:%Y-%m-%d}" in calendar
    # the chart has drawn something (its pixels are not all blank)
    painted = driver.execute_script(  # type: ignore[attr-defined]
        "const c = document.getElementById('chart');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;"
    )
    assert painted > 100
    driver.save_screenshot(str(tmp_path / "dashboard-running.png"))  # type: ignore[attr-defined]

    driver.find_element(By.CSS_SELECTOR, "#r-controls button[data-act=pause]").click()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 15
    while rollout_report(ledger, rid, SYSTEM_CLOCK.now())["rollout"]["state"] != "paused":
        assert time.monotonic() < deadline, "the page did not pause the rollout"
        time.sleep(0.2)
    wait_for(driver, lambda d: d.find_element(By.ID, "r-state").text == "paused")
    driver.save_screenshot(str(tmp_path / "dashboard-paused.png"))  # type: ignore[attr-defined]
    with ledger.rollouts() as store:
        [paused] = store.events(kind="rollout.paused", rollout_id=rid)
    assert paused.data["by"] == "api:alice"

    sign_in(driver, server.base_url, viewer)  # a viewer: the same figures, no controls
    wait_for(driver, lambda d: "wall-screen (viewer)" in d.find_element(By.ID, "who").text)
    wait_for(driver, lambda d: d.find_element(By.ID, "r-state").text == "paused")
    controls = driver.find_element(By.ID, "r-controls")  # type: ignore[attr-defined]
    assert not controls.is_displayed()
    driver.save_screenshot(str(tmp_path / "dashboard-viewer.png"))  # type: ignore[attr-defined]
    for name in ("running", "paused", "viewer"):
        assert (tmp_path / f"dashboard-{name}.png").stat().st_size > 10_000
