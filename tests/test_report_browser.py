"""The HTML reports in a real browser: Debian's headless chromium driven by Selenium (chromedriver).

Every page must load without console errors, draw every image and chart at a non-zero size,
show its table with rows, and (compare) answer hover and toggle. A screenshot of each page goes
to the test's tmp dir, and to ``$INITLAB_SCREENSHOTS`` (e.g. docs/img) when that is set.

Chromium comes from apt (``apt-get install chromium chromium-driver``; ``.ci/run`` installs it),
never downloaded at run time. Without it this test FAILS wherever apt-get exists (CI included);
it skips only on a machine without apt, or when INITLAB_SKIP_BROWSER=1 says so on purpose (never in CI).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_report import KINDS, result_folders

from initlab.report import write_report

CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install chromium chromium-driver (as .ci/run does)"


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def require_browser():
    """Selenium + chromium + chromedriver, or fail (skip only where apt is unavailable or skipping is asked)."""
    problems = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        problems.append("selenium is not installed (pip install -e '.[dev]')")
    driver = CHROMEDRIVER if CHROMEDRIVER.exists() else Path(shutil.which("chromedriver") or CHROMEDRIVER)
    if chromium_binary() is None or not driver.exists():
        problems.append(f"chromium or {CHROMEDRIVER} is missing ({INSTALL})")
    if not problems:
        return driver
    message = "; ".join(problems)
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run in CI: {message}")
    if os.environ.get("INITLAB_SKIP_BROWSER") == "1":
        pytest.skip(f"INITLAB_SKIP_BROWSER=1: {message}")
    if shutil.which("apt-get") and "selenium" not in message:
        pytest.fail(f"browser test cannot run: {message}; or set INITLAB_SKIP_BROWSER=1 to skip it knowingly")
    if "selenium" in message:
        pytest.fail(f"browser test cannot run: {message}")
    pytest.skip(f"no apt on this machine to install chromium: {message}")


@pytest.fixture(scope="module")
def browser():
    driver_path = require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    folders = result_folders(tmp_path_factory.getbasetemp() / "report-results")
    return {k: write_report(p) for k, p in folders.items()}


PROBLEMS_JS = """
const out = [];
for (const img of document.images) {
  const r = img.getBoundingClientRect();
  if (!img.complete || img.naturalWidth === 0 || r.width === 0 || r.height === 0)
    out.push('image not rendered: ' + (img.alt || img.src.slice(0, 40)));
}
for (const svg of document.querySelectorAll('svg.plot')) {
  const r = svg.getBoundingClientRect();
  if (r.width < 100 || r.height < 50) out.push('chart too small: ' + svg.getAttribute('aria-label'));
  if (!svg.querySelector('.series path, .series circle')) out.push('chart with nothing drawn: ' + svg.getAttribute('aria-label'));
}
const rows = document.querySelectorAll('table.summary tbody tr');
if (rows.length === 0) out.push('summary table missing or empty');
if (!document.querySelector('#reading li')) out.push('no reading');
return out;
"""


def page_problems(driver, url: str) -> list[str]:
    """Open ``url`` and list what is wrong: console errors, unrendered images/charts, an empty table."""
    driver.get(url)
    driver.execute_script("return document.readyState")  # driver.get waits for the load event
    problems = [f"console: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return problems + driver.execute_script(PROBLEMS_JS)


def keep(path: Path) -> Path:
    """Copy a screenshot to $INITLAB_SCREENSHOTS (e.g. docs/img) when that is set."""
    assert path.stat().st_size > 10_000  # a real picture, not a blank
    target = os.environ.get("INITLAB_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / path.name)
    return path


def screenshot(driver, name: str, tmp_path: Path, section: str | None = None) -> Path:
    """The whole page (window as tall as the document), or one section of it, as ``name``.png."""
    from selenium.webdriver.common.by import By

    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height, 600), 12000))
    try:
        path = tmp_path / f"{name}.png"
        if section is None:
            assert driver.save_screenshot(str(path))
        else:
            assert driver.find_element(By.ID, section).screenshot(str(path))
        return keep(path)
    finally:
        driver.set_window_size(1280, 900)


@pytest.mark.parametrize("kind", KINDS)
def test_report_renders_in_chromium(browser, reports, kind, tmp_path):
    problems = page_problems(browser, reports[kind].resolve().as_uri())
    assert problems == []
    charts = browser.execute_script("return document.querySelectorAll('svg.plot').length")
    images = browser.execute_script("return document.images.length")
    assert charts + images > 0
    screenshot(browser, f"report-{kind}", tmp_path)
    if kind == "compare":  # the part a README can show at a readable size
        screenshot(browser, "report-compare-curves", tmp_path, section="curves")


def test_hover_reads_a_value_and_legend_toggles_an_init(browser, reports):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(reports["compare"].resolve().as_uri())
    chart = browser.find_element(By.CSS_SELECTOR, "figure.chart")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    point = chart.find_element(By.CSS_SELECTOR, 'g.series[data-init="3"] circle.pt')
    expected = point.get_attribute("data-tip")
    assert expected and expected.startswith("he, epoch")  # <title> moved into data-tip by the script
    ActionChains(browser).move_to_element(point).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and tip.text == expected

    def visible_series(key: str) -> int:
        return browser.execute_script(
            "return [...document.querySelectorAll('g.series[data-init=\"' + arguments[0] + '\"]')]"
            ".filter(g => g.getBoundingClientRect().width > 0).length", key)

    shown = visible_series("3")
    assert shown >= 4  # he is drawn in every curve
    button = chart.find_element(By.CSS_SELECTOR, 'button.lg[data-init="3"]')
    button.click()
    assert visible_series("3") == 0 and button.get_attribute("aria-pressed") == "false"
    assert visible_series("2") > 0  # the others stay
    row = browser.find_element(By.CSS_SELECTOR, 'table.summary tr[data-init="3"]')
    assert "off" in row.get_attribute("class")
    button.click()
    assert visible_series("3") == shown
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_the_check_catches_a_broken_image_a_console_error_and_an_empty_table(browser, reports, tmp_path):
    html = reports["probe"].read_text(encoding="utf-8")
    html = html.replace('src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1)
    start, end = html.index("<tbody>"), html.index("</tbody>")
    html = html[:start] + "<tbody>" + html[end:]
    html = html.replace("</body>", '<script>console.error("boom")</script></body>')
    broken = tmp_path / "broken.html"
    broken.write_text(html, encoding="utf-8")
    problems = page_problems(browser, broken.as_uri())
    assert any(p.startswith("console:") and "boom" in p for p in problems), problems
    assert any(p.startswith("image not rendered") for p in problems), problems
    assert "summary table missing or empty" in problems
