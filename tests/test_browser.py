"""The UI in a real browser: `streamlit run app.py` on 127.0.0.1, driven by headless Chromium.

Needs Debian's `chromium` and `chromium-driver` (apt-get install -y --no-install-recommends
chromium chromium-driver) and selenium (the [ui] extra); skips cleanly without them.
Selenium drives the distribution's chromedriver, so nothing is downloaded at test time;
Chromium's own --screenshot/--dump-dom cannot press Run or wait for the result, which
Streamlit renders over a websocket after the page has loaded.

SERVESIM_SCREENSHOTS=docs/screenshots pytest -m browser refreshes the README screenshots.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                  "--no-first-run", "--disable-component-update", "--disable-sync", "--window-size=1400,1700",
                  "--hide-scrollbars"]
STARTUP_S = 60
RENDER_S = 60

if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)", allow_module_level=True)
pytest.importorskip("streamlit", reason="needs the [ui] extra")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs the [ui] extra (selenium)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` headless on a free loopback port; stopped (by its pid) afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "SERVESIM_PROFILES_DIR": str(tmp_path_factory.mktemp("profiles"))}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(RENDER_S)
    yield driver
    driver.quit()


def wait_text(driver, text: str, timeout: float = RENDER_S) -> None:
    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element(By.TAG_NAME, "body").text)


def settle(driver, timeout: float = RENDER_S) -> None:
    """Wait until Streamlit has finished running the script (its status widget disappears)."""
    time.sleep(0.5)
    WebDriverWait(driver, timeout).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'))
    time.sleep(0.5)


def click_button(driver, label: str) -> None:
    xpath = f'//button[.//p[normalize-space()="{label}"]]'
    button = WebDriverWait(driver, RENDER_S).until(EC.element_to_be_clickable((By.XPATH, xpath)))
    button.click()


def check_png(path: Path) -> None:
    """A real screenshot: right size, and not one flat colour (an unrendered page is blank)."""
    from PIL import Image

    with Image.open(path) as img:
        assert img.size[0] >= 800 and img.size[1] >= 600, img.size
        colours = img.convert("RGB").resize((200, 150)).getcolors(maxcolors=200 * 150)
        assert colours is not None and len(colours) > 20, "the screenshot is (almost) blank"


def shoot(driver, name: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{name}.png"
    driver.save_screenshot(str(out))
    check_png(out)
    target = os.environ.get("SERVESIM_SCREENSHOTS")
    if target:  # README copies: half size, 256-colour palette (small files, still legible)
        from PIL import Image

        Path(target).mkdir(parents=True, exist_ok=True)
        with Image.open(out) as img:
            small = img.convert("RGB").resize((img.width * 2 // 3, img.height * 2 // 3), Image.LANCZOS)
            small.quantize(colors=256).save(Path(target) / f"{name}.png", optimize=True)
    return out


def test_default_scenario_runs_in_the_browser(server, browser, tmp_path):
    browser.get(f"{server}/")  # the default page lives at the root
    wait_text(browser, "Run simulation")
    settle(browser)
    click_button(browser, "Run simulation")
    wait_text(browser, "TTFT p99")
    settle(browser)
    body = browser.find_element(By.TAG_NAME, "body").text
    for label in ("TTFT p50", "TPOT p99", "E2E p99", "Throughput (req/s)", "Goodput (req/s)", "$ / 1M output tokens", "$ / month"):
        assert label in body
    assert "Stable:" in body and "Traceback" not in body
    cards = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricValue"]')
    assert len(cards) >= 12 and all(c.text and c.text != "—" for c in cards[:12])  # the headline cards
    assert len(browser.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"], .vega-embed')) >= 1
    shoot(browser, "scenario", tmp_path)


def click_text(driver, text: str) -> None:
    xpath = f'//*[normalize-space(text())="{text}"]'
    WebDriverWait(driver, RENDER_S).until(EC.element_to_be_clickable((By.XPATH, xpath))).click()


@pytest.mark.parametrize("page, action, done", [
    ("compare", lambda d: click_button(d, "Run comparison"), "continuous + speculative"),
    ("plan", lambda d: click_button(d, "Plan"), "at peak"),
    ("calibrate", lambda d: click_text(d, "a profile's measurements"), "Measured vs predicted"),
])
def test_every_page_renders(server, browser, tmp_path, page, action, done):
    browser.get(f"{server}/{page}")
    wait_text(browser, page.capitalize())
    settle(browser)
    action(browser)
    WebDriverWait(browser, 3 * RENDER_S).until(lambda d: done in d.page_source)
    settle(browser, 3 * RENDER_S)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in body
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    shoot(browser, page, tmp_path)
