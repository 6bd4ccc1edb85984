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
             "--server.address", "127.0.0.1", "--server.port", str(port),
             "--server.fileWatcherType", "none"],  # the rest as users get it, from .streamlit/config.toml
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


def script_state(driver) -> str:
    """Streamlit's own run state of the page ("running", "notRunning", ...), as its e2e tests read it."""
    apps = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
    return apps[0].get_attribute("data-test-script-state") if apps else ""


def settle(driver, timeout: float = RENDER_S, start_s: float = 1.5) -> None:
    """Wait until Streamlit has finished running the script.

    A rerun an action triggers starts a moment later (longer on a busy machine), so first give
    it up to `start_s` to start, then wait until it is done and its status widget is gone.
    """
    deadline = time.monotonic() + start_s
    while time.monotonic() < deadline and script_state(driver) == "notRunning":
        time.sleep(0.1)
    WebDriverWait(driver, timeout).until(
        lambda d: script_state(d) == "notRunning"
        and not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'))
    time.sleep(0.3)


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


# --- flows: what a planner does with the form, checked against what the UI then computes -----------

from selenium.webdriver.common.keys import Keys  # noqa: E402


def body_text(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def no_traceback(driver) -> None:
    """No page may show a Python exception (Streamlit renders them as stException)."""
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]'), body_text(driver)[:2000]
    assert "Traceback" not in body_text(driver)


def open_page(driver, url: str) -> None:
    """Load a page in a new session (a fresh browser tab's worth of state) and wait for it to finish."""
    driver.get(url)
    WebDriverWait(driver, RENDER_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stMainBlockContainer"] h1'))
    settle(driver)


def widgets(driver, testid: str, label: str) -> list:
    xpath = f'//*[@data-testid="{testid}"][.//*[@data-testid="stWidgetLabel"]//p[normalize-space()="{label}"]]'
    return driver.find_elements(By.XPATH, xpath)


def number_input(driver, label: str, index: int = 0):
    WebDriverWait(driver, RENDER_S).until(lambda d: len(widgets(d, "stNumberInput", label)) > index)
    return widgets(driver, "stNumberInput", label)[index].find_element(By.TAG_NAME, "input")


def type_number(driver, label: str, value, index: int = 0) -> None:
    """Type `value` into a number input as a person would (select all, type, Enter) and wait for the rerun."""
    box = number_input(driver, label, index)
    WebDriverWait(driver, RENDER_S).until(lambda d: box.is_displayed())  # e.g. an expander opening
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.ENTER)
    settle(driver)


def choose(driver, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label` and wait for the rerun."""
    WebDriverWait(driver, RENDER_S).until(lambda d: widgets(d, "stSelectbox", label))
    combobox = widgets(driver, "stSelectbox", label)[0].find_element(By.CSS_SELECTOR, '[role="combobox"]')
    combobox.click()
    combobox.send_keys(option)  # filters the list: a long one only renders the options in view
    xpath = f'//*[@role="option"][normalize-space()="{option}"]'
    WebDriverWait(driver, RENDER_S).until(EC.element_to_be_clickable((By.XPATH, xpath))).click()
    settle(driver)


def selected(driver, label: str) -> str:
    WebDriverWait(driver, RENDER_S).until(lambda d: widgets(d, "stSelectbox", label))
    combobox = widgets(driver, "stSelectbox", label)[0].find_element(By.CSS_SELECTOR, '[role="combobox"]')
    return combobox.get_attribute("value")


def upload(driver, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, '[data-testid="stFileUploaderDropzoneInput"]').send_keys(str(path))
    settle(driver)
    time.sleep(1.0)  # the upload, then the rerun it triggers
    settle(driver)


def button_enabled(driver, label: str) -> bool:
    return driver.find_element(By.XPATH, f'//button[.//p[normalize-space()="{label}"]]').is_enabled()


def errors(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlertContentError"]')


def message(alert) -> str:
    """An alert's text without its icon (a Material Symbols ligature, read as the word "error")."""
    text = alert.text.replace("≥", ">=").replace("≤", "<=")  # markdown's typography, undone
    return text.split("\n", 1)[1] if text.startswith("error\n") else text


def messages(driver) -> list[str]:
    return [message(e) for e in errors(driver)]


def error_shown(driver, start: str) -> bool:
    """Whether an error starting with `start` appears (waiting for it a while: reruns take time)."""
    try:
        WebDriverWait(driver, RENDER_S).until(lambda d: any(t.startswith(start) for t in messages(d)))
        return True
    except Exception:  # noqa: BLE001 - a timeout: the assertion that uses this says what was shown
        return False


def run_scenario(driver) -> str:
    """Press Run and return the result's status line ("Stable: ... (offered X req/s)")."""
    click_button(driver, "Run simulation")
    settle(driver)
    wait_text(driver, "TTFT p99")
    WebDriverWait(driver, RENDER_S).until(  # the result of this form, not an earlier one's
        lambda d: "These results are for the inputs of the last run" not in body_text(d))
    no_traceback(driver)
    return next(line for line in body_text(driver).split("\n") if "offered" in line or "unstable" in line.lower())


def offered_rate(status: str) -> float:
    import re

    return float(re.search(r"offered ([\d.,]+) req/s", status).group(1).replace(",", ""))


def result_fleet(driver) -> str:
    """The run's fleet as its result states it ("3 GPUs × $3.93/h")."""
    line = next(line for line in body_text(driver).split("\n") if "GPUs × $" in line)
    return line.split(" = ")[0]


def fleet(gpus: int, gpu: str) -> str:
    from sim.catalog import resolve_gpu

    return f"{gpus} GPUs × ${resolve_gpu(gpu, 'gpu').price_usd_per_gpu_hour:.2f}/h"


def scenario_file(tmp_path: Path, name: str, **changes) -> Path:
    """A shipped scenario with `changes` ({"serving.replicas": 3}) written to tmp_path/name."""
    import yaml

    from sim.scenario import DEFAULT_SCENARIO, read_scenario_file

    data = read_scenario_file(changes.pop("_from", DEFAULT_SCENARIO))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    out = tmp_path / name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def test_switching_scenario_runs_the_scenario_shown(server, browser):
    """Defect: the form kept (and Run simulated) the previous scenario's values after a switch."""
    open_page(browser, f"{server}/")
    assert number_input(browser, "Request rate (req/s)").get_attribute("value") == "12.00"
    choose(browser, "Shipped scenario", "priority_mixed.yaml")
    assert number_input(browser, "Request rate (req/s)").get_attribute("value") == "4.00"
    assert number_input(browser, "Replicas").get_attribute("value") == "1"
    assert selected(browser, "Scheduler") == "priority"
    type_number(browser, "Requests to simulate", 600)
    status = run_scenario(browser)
    assert 3.0 < offered_rate(status) < 5.0, status  # priority_mixed's 4 req/s, not the default's 12
    assert result_fleet(browser) == fleet(1, "a100-80gb-sxm")
    # ...and back: the default's own values, not priority_mixed's (nor the 600 typed above).
    choose(browser, "Shipped scenario", "chat_llama3_8b_a100.yaml")
    assert number_input(browser, "Request rate (req/s)").get_attribute("value") == "12.00"
    assert number_input(browser, "Requests to simulate").get_attribute("value") == "2000"
    assert selected(browser, "Scheduler") == "continuous"
    type_number(browser, "Requests to simulate", 500)
    status = run_scenario(browser)
    assert 10.0 < offered_rate(status) < 14.0, status
    assert result_fleet(browser) == fleet(2, "a100-80gb-sxm")


def test_uploaded_file_replaces_the_form_and_a_shipped_pick_replaces_the_upload(server, browser, tmp_path):
    open_page(browser, f"{server}/")
    type_number(browser, "Request rate (req/s)", 3)  # an edit the upload must not keep
    upload(browser, scenario_file(tmp_path, "h100.yaml", **{"hardware.gpu": "h100-sxm", "serving.replicas": 3,
                                                            "workload.num_requests": 400}))
    no_traceback(browser)
    assert selected(browser, "GPU") == "h100-sxm"
    assert number_input(browser, "Replicas").get_attribute("value") == "3"
    assert number_input(browser, "Request rate (req/s)").get_attribute("value") == "12.00"
    run_scenario(browser)
    assert result_fleet(browser) == fleet(3, "h100-sxm")  # what was simulated, not only what the form shows
    choose(browser, "Shipped scenario", "static_batching.yaml")
    assert selected(browser, "GPU") == "a100-80gb-sxm"
    assert selected(browser, "Scheduler") == "static"
    assert "h100.yaml" not in body_text(browser)  # the uploader was cleared


def test_uploaded_negative_value_is_one_clear_error(server, browser, tmp_path):
    """Defect: a file with rate_per_s: -3 replaced the page with StreamlitValueBelowMinError."""
    open_page(browser, f"{server}/")
    upload(browser, scenario_file(tmp_path, "negative.yaml", **{"workload.arrival.rate_per_s": -3}))
    no_traceback(browser)
    assert error_shown(browser, "workload.arrival.rate_per_s: got -3.0; allowed 0 < x"), messages(browser)
    assert number_input(browser, "Request rate (req/s)").get_attribute("value") == "-3.00"
    assert not button_enabled(browser, "Run simulation")
    type_number(browser, "Request rate (req/s)", 2)  # fixing it in the form clears the error
    assert not errors(browser) and button_enabled(browser, "Run simulation")


def test_typed_negative_value_is_refused_not_replaced(server, browser):
    """Defect: typing -5 showed -5 while Run simulated the previous value."""
    open_page(browser, f"{server}/")
    type_number(browser, "Requests to simulate", 400)
    run_scenario(browser)
    type_number(browser, "Request rate (req/s)", -5)
    no_traceback(browser)
    assert number_input(browser, "Request rate (req/s)").get_attribute("value") == "-5.00"
    assert error_shown(browser, "workload.arrival.rate_per_s: got -5.0; allowed 0 < x"), messages(browser)
    assert not button_enabled(browser, "Run simulation")
    assert "These results are for the inputs of the last run" in body_text(browser)


def test_length_errors_are_readable_and_under_their_field(server, browser):
    """Defect: errors on length fields wrapped a letter per line in a quarter-width column; mean > max passed."""
    open_page(browser, f"{server}/")
    type_number(browser, "max", 8)  # the prompt's max, below its min (16)
    no_traceback(browser)
    assert error_shown(browser, "workload.prompt_tokens.max: got 8"), messages(browser)
    (error,) = [e for e in errors(browser) if "workload.prompt_tokens.max" in e.text]
    assert message(error).startswith("workload.prompt_tokens.max: got 8; must be >= min")
    alert = error.find_element(By.XPATH, './ancestor::*[@data-testid="stAlert"]')
    column = widgets(browser, "stNumberInput", "max")[0].size["width"]
    assert alert.size["width"] > 3 * column and alert.size["height"] < 150, (alert.size, column)  # the row's width
    prompt_row = number_input(browser, "max", 0).location["y"]
    output_kind = widgets(browser, "stSelectbox", "Output tokens")[0].location["y"]
    assert prompt_row < error.location["y"] < output_kind  # under the prompt's row, above the output's
    type_number(browser, "max", 4096)
    assert not errors(browser)
    type_number(browser, "mean", 5000)  # above max: no longer accepted silently
    assert error_shown(browser, "workload.prompt_tokens.mean: got 5000.0; must lie within [min, max]"), messages(browser)
    assert not button_enabled(browser, "Run simulation")


def nav(driver, title: str) -> None:
    """Move to another page through the sidebar, as a person does (the session and its state stay)."""
    path = "" if title == "Scenario" else title.lower()
    css = f'a[data-testid="stSidebarNavLink"][href$="/{path}"]'
    WebDriverWait(driver, RENDER_S).until(EC.element_to_be_clickable((By.CSS_SELECTOR, css))).click()
    wait_text(driver, title)
    settle(driver)


def small_plan_inputs(driver) -> None:
    """Inputs that plan in seconds: 200k queries/day, 200 requests per simulated point."""
    type_number(driver, "Queries per day", 200000)
    click_text(driver, "Search settings")
    type_number(driver, "Requests per simulated point", 200)


def plan_answer(driver) -> str:
    WebDriverWait(driver, 3 * RENDER_S).until(lambda d: "Cheapest:" in body_text(d) or d.find_elements(
        By.CSS_SELECTOR, '[data-testid="stException"]'))
    settle(driver, 3 * RENDER_S)
    no_traceback(driver)
    return next(line for line in body_text(driver).split("\n") if line.startswith("Cheapest:"))


def test_plan_survives_download_edit_navigation_and_a_second_session(server, browser, tmp_path):
    """Defect: after a plan, downloading, editing, leaving and returning, or planning inputs another
    session had planned raised CacheReplayClosureError (a progress bar inside st.cache_data)."""
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    open_page(browser, f"{server}/plan")
    small_plan_inputs(browser)
    click_button(browser, "Plan")
    answer = plan_answer(browser)
    click_button(browser, "Plan (CSV)")
    settle(browser)
    assert plan_answer(browser) == answer
    click_button(browser, "The answer and its assumptions (Markdown)")
    settle(browser)
    WebDriverWait(browser, RENDER_S).until(lambda d: (tmp_path / "plan.md").is_file())
    report = (tmp_path / "plan.md").read_text()
    assert answer in report and "/GPU-hour (" in report and "Cost model per candidate: " in report
    assert "200,000 queries/day" in report and "200 requests per simulated point" in report
    assert plan_answer(browser) == answer
    type_number(browser, "Mean output tokens", 250)
    assert plan_answer(browser) == answer and "The form has changed since this plan" in body_text(browser)
    nav(browser, "Scenario")
    nav(browser, "Plan")
    assert plan_answer(browser) == answer
    assert number_input(browser, "Mean output tokens").get_attribute("value") == "250"  # the edit is kept
    assert number_input(browser, "Queries per day").get_attribute("value") == "200000"
    type_number(browser, "Mean output tokens", 220)  # back to the planned inputs
    assert "The form has changed since this plan" not in body_text(browser)
    # A new session (another tab) planning the same inputs gets the same answer, not an exception.
    open_page(browser, f"{server}/plan")
    small_plan_inputs(browser)
    click_button(browser, "Plan")
    assert plan_answer(browser) == answer


def coloured_pixels(element, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels of an element's screenshot are close to `rgb` (a chart's mark colour)."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")
    return sum(n for n, px in img.getcolors(maxcolors=img.width * img.height)
               if all(abs(a - b) <= tolerance for a, b in zip(px, rgb)))


def chart_marks(driver, timeout: float = 10.0) -> int:
    """Pixels in the Compare page's variant chart drawn in its mark colours (stable blue, unstable red)."""
    deadline = time.monotonic() + timeout
    while True:
        chart = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')[0]
        driver.execute_script("arguments[0].scrollIntoView();", chart)
        time.sleep(0.5)  # vega draws after the element appears
        n = coloured_pixels(chart, (0x4C, 0x78, 0xA8)) + coloured_pixels(chart, (0xE4, 0x57, 0x56))
        if n > 100 or time.monotonic() > deadline:
            return n


def test_compare_draws_its_bars_and_refuses_a_profile_for_another_dtype(server, browser):
    """Defects: the default bar chart was empty (log scale on bars from zero); a bf16 profile priced
    the fp8 variant as bf16 (identical numbers) without a word."""
    open_page(browser, f"{server}/")
    choose(browser, "Cost model", "a100-80gb-sxm_llama-3.1-8b_tp1_bf16")
    nav(browser, "Compare")
    type_number(browser, "Requests per run", 200)
    click_button(browser, "Run comparison")
    wait_text(browser, "Latency CDF")
    settle(browser, 3 * RENDER_S)
    no_traceback(browser)
    text = body_text(browser)
    assert "skipped — cost_model.profile: a100-80gb-sxm_llama-3.1-8b_tp1_bf16 was measured with bf16" in text, text
    variants = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')[0].text  # SVG axis labels
    assert "continuous" in variants and "weights" not in variants  # the skipped variant is not drawn
    assert chart_marks(browser) > 2000  # bars
    click_text(browser, "log scale")
    settle(browser)
    assert chart_marks(browser) > 100  # dots
    no_traceback(browser)


def test_calibrate_fits_step_shapes_like_the_cli_and_describes_the_profile(server, browser):
    """Defects: the page fitted raw rows (not step shapes, as `servesim calibrate fit` does), and the
    save form defaulted to llama-3.1-8b / TP 1 and cut the name at "3.1"."""
    import pandas as pd

    from calibration.fit import fit_profile, format_report
    from calibration.profile import load_profile
    from calibration.vllm_harness import step_shapes

    open_page(browser, f"{server}/calibrate")
    click_text(browser, "a profile's measurements")
    settle(browser)
    choose(browser, "Profile", "cpu-vllm_tiny-llama_tp1_bf16")
    wait_text(browser, "Save as a profile")
    settle(browser)
    no_traceback(browser)
    measured = pd.read_csv(Path(load_profile("cpu-vllm_tiny-llama_tp1_bf16").path) / "measurements.csv")
    expected = format_report(fit_profile(step_shapes(measured, "min")))
    shown = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stCode"]')[-1].text
    assert [line.strip() for line in shown.splitlines()] == [line.strip() for line in expected.splitlines()]
    assert f"{len(step_shapes(measured))} shapes from {len(measured)} measured steps" in body_text(browser)

    choose(browser, "Profile", "a100-80gb-sxm_llama-3.1-8b_tp2_bf16")
    wait_text(browser, "Save as a profile")
    settle(browser)
    name = widgets(browser, "stTextInput", "Name")[0].find_element(By.TAG_NAME, "input").get_attribute("value")
    assert name == "a100-80gb-sxm_llama-3.1-8b_tp2_bf16-refit"
    assert selected(browser, "Model measured") == "llama-3.1-8b"
    assert selected(browser, "Tensor parallel") == "2"
    assert selected(browser, "GPU it stands for") == "a100-80gb-sxm"
    no_traceback(browser)


def test_scenario_edits_and_upload_outlive_a_visit_to_another_page(server, browser, tmp_path):
    """Defect: form edits were lost when moving between pages."""
    open_page(browser, f"{server}/")
    upload(browser, scenario_file(tmp_path, "mine.yaml", **{"serving.replicas": 3}))
    type_number(browser, "Request rate (req/s)", 7)
    choose(browser, "Scheduler", "priority")
    nav(browser, "Compare")
    assert "Edited scenario from mine.yaml" in body_text(browser)
    nav(browser, "Scenario")
    assert "Using the uploaded mine.yaml" in body_text(browser)
    assert number_input(browser, "Request rate (req/s)").get_attribute("value") == "7.00"
    assert number_input(browser, "Replicas").get_attribute("value") == "3"
    assert selected(browser, "Scheduler") == "priority"
    type_number(browser, "Requests to simulate", 300)
    status = run_scenario(browser)
    assert 5.0 < offered_rate(status) < 9.0, status
    assert result_fleet(browser) == fleet(3, "a100-80gb-sxm")


def test_no_deploy_button_and_an_icon_served_locally(server, browser):
    open_page(browser, f"{server}/")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stAppDeployButton"]')
    icons = [e.get_attribute("href") for e in browser.find_elements(By.CSS_SELECTOR, 'link[rel~="icon"]')]
    assert icons and all(h.startswith(server) or h.startswith("data:") for h in icons), icons


def test_pin_a_baseline_and_see_the_next_run_against_it(server, browser):
    open_page(browser, f"{server}/")
    type_number(browser, "Requests to simulate", 300)
    run_scenario(browser)
    click_button(browser, "Pin as baseline")
    settle(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricDelta"]')  # the baseline itself
    type_number(browser, "Replicas", 1)
    run_scenario(browser)
    assert "Changes are against the pinned baseline: chat_llama3_8b_a100.yaml (2 GPUs)" in body_text(browser)
    deltas = {d.find_element(By.XPATH, './ancestor::*[@data-testid="stMetric"]').find_element(
        By.CSS_SELECTOR, '[data-testid="stMetricLabel"]').text: d.text
        for d in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricDelta"]')}
    assert deltas["$ / month"].endswith("-50.0 %"), deltas  # one GPU instead of two
    no_traceback(browser)


def test_the_address_bar_is_a_link_to_what_is_on_screen(server, browser):
    open_page(browser, f"{server}/")
    choose(browser, "Shipped scenario", "priority_mixed.yaml")
    type_number(browser, "Request rate (req/s)", 5)
    type_number(browser, "Replicas", 2)
    link = browser.current_url
    assert "?s=" in link
    open_page(browser, link)  # a new session, as a colleague opening the link
    no_traceback(browser)
    assert number_input(browser, "Request rate (req/s)").get_attribute("value") == "5.00"
    assert number_input(browser, "Replicas").get_attribute("value") == "2"
    assert selected(browser, "Scheduler") == "priority"
    type_number(browser, "Requests to simulate", 300)
    assert 4.0 < offered_rate(run_scenario(browser)) < 6.0
    assert result_fleet(browser) == fleet(2, "a100-80gb-sxm")

    open_page(browser, f"{server}/plan")
    type_number(browser, "Queries per day", 300000)
    choose(browser, "Percentile", "95.0")
    link = browser.current_url
    open_page(browser, link)
    assert number_input(browser, "Queries per day").get_attribute("value") == "300000"
    assert selected(browser, "Percentile") == "95.0"
    no_traceback(browser)


def test_bad_files_get_one_clear_line_each(server, browser, tmp_path):
    """Not YAML, a word where a number goes, a section that is not a mapping: each gets the core's
    one line (as the CLI prints it), never a traceback, and the page keeps working."""
    open_page(browser, f"{server}/")
    broken = tmp_path / "broken.yaml"
    broken.write_text("workload: [unclosed\n")
    upload(browser, broken)
    no_traceback(browser)
    assert error_shown(browser, "broken.yaml: not valid YAML"), messages(browser)
    assert "showing chat_llama3_8b_a100.yaml instead" in body_text(browser)
    choose(browser, "Shipped scenario", "fifo_baseline.yaml")  # a shipped pick clears the bad upload
    assert not errors(browser)
    upload(browser, scenario_file(tmp_path, "word.yaml", **{"serving.replicas": "two"}))
    no_traceback(browser)
    assert error_shown(browser, "serving.replicas: got 'two'"), messages(browser)
    assert not button_enabled(browser, "Run simulation")
    type_number(browser, "Replicas", 2)  # fixed in the form
    assert not errors(browser) and button_enabled(browser, "Run simulation")
    upload(browser, scenario_file(tmp_path, "section.yaml", **{"serving.quantization": "fp8"}))
    no_traceback(browser)
    assert any(t.startswith("serving.quantization") for t in messages(browser)), messages(browser)


# --- long runs: progress and Stop; the cost model the CLI uses --------------------------------------

def test_stop_ends_a_long_run_and_says_so(server, browser):
    """A run of two million requests (minutes here) shows its progress; Stop ends it within seconds,
    the page says it stopped and after how many requests, and shows no numbers."""
    import re

    open_page(browser, f"{server}/")
    type_number(browser, "Requests to simulate", 2_000_000)
    click_button(browser, "Run simulation")
    progress = re.compile(r"Simulating: ([\d,]+) of 2,000,000 requests finished")
    WebDriverWait(browser, RENDER_S).until(
        lambda d: (m := progress.search(body_text(d))) and int(m.group(1).replace(",", "")) > 0)
    assert script_state(browser) == "running"
    asked = time.monotonic()
    click_button(browser, "Stop")
    wait_text(browser, "Stopped after")
    settle(browser)
    took_s = time.monotonic() - asked
    body = body_text(browser)
    no_traceback(browser)
    finished = int(re.search(r"Stopped after ([\d,]+) of 2,000,000 requests finished", body).group(1).replace(",", ""))
    assert 0 < finished < 1_000_000, body[:2000]  # well before the end
    assert took_s < 20, f"Stop took {took_s:.1f} s"
    assert "No results" in body and "TTFT p99" not in body and "Stable:" not in body
    assert not browser.find_elements(By.XPATH, '//button[.//p[normalize-space()="Stop"]]')
    assert not progress.search(body)
    # The page stays usable: a short run afterwards gives numbers and the notice goes.
    type_number(browser, "Requests to simulate", 300)
    status = run_scenario(browser)
    assert "Stopped after" not in body_text(browser) and status


def test_cost_model_defaults_to_auto_and_the_result_names_it(server, browser):
    """The form starts from the file's cost model, and from the CLI's default (auto) when the file names
    none; the result says which profile priced it and how far such predictions were from measured runs."""
    open_page(browser, f"{server}/")
    assert selected(browser, "Cost model").startswith("auto:")  # chat_llama3_8b_a100.yaml: {kind: auto}
    choose(browser, "Shipped scenario", "priority_mixed.yaml")  # names no cost model
    assert selected(browser, "Cost model").startswith("auto:")
    assert "cost model: auto: profile a100-80gb-sxm_llama-3.1-8b_tp1_bf16" in body_text(browser)
    type_number(browser, "Requests to simulate", 300)
    run_scenario(browser)
    from sim.scenario import load_scenario
    from sim.simulation import run

    used = run(load_scenario("priority_mixed.yaml", ["workload.num_requests=300"])).cost_model_name
    assert used.startswith("auto: profile a100-80gb-sxm_llama-3.1-8b_tp1_bf16")
    assert f"cost model: {used}" in body_text(browser)
    assert "Accuracy: no measured vLLM runs on a100-80gb-sxm" in body_text(browser)


def test_stop_ends_a_plan_and_says_so(server, browser):
    """Plan shows simulations done so far and stops on Stop (the simulations running finish, the
    rest are cancelled); no answer is shown for a stopped plan."""
    import re

    open_page(browser, f"{server}/plan")
    click_text(browser, "Search settings")
    type_number(browser, "Requests per simulated point", 5000)  # a plan of minutes here
    click_button(browser, "Plan")
    progress = re.compile(r"Planning \(the total grows as the searches go\): ([\d,]+) of ([\d,]+) simulations")
    WebDriverWait(browser, 3 * RENDER_S).until(lambda d: (m := progress.search(body_text(d))) and int(m.group(1)) > 0)
    asked = time.monotonic()
    click_button(browser, "Stop")
    wait_text(browser, "Stopped after", 3 * RENDER_S)
    settle(browser)
    took_s = time.monotonic() - asked
    body = body_text(browser)
    no_traceback(browser)
    assert re.search(r"Stopped after [\d,]+ of [\d,]+ simulations\. No results", body), body[:2000]
    assert "Cheapest:" not in body and not progress.search(body)
    assert took_s < 60, f"Stop took {took_s:.1f} s"
