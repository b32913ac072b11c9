"""The upload page at ``/`` in a real browser (headless Chromium) against a real server.

Needs Debian's ``chromium`` and ``chromedriver`` (``make install`` brings both) and the
``live_server``
fixture, which yields the base URL of a running ``mriscribe serve``. Set
``MRISCRIBE_SCREENSHOT_DIR`` to keep screenshots of the result states.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from mriscribe.report.template import SECTIONS

HELDOUT = Path(__file__).parent / "fixtures" / "heldout"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TIMEOUT = 60  # seconds: generous, since a test run may share its cores with other work
REPORT_ORDER = list(SECTIONS)

@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    # A missing browser is a failed install, not a reason to skip: make install brings both.
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "needs: apt-get install chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1800",
        "--lang=en-GB",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    driver.set_script_timeout(TIMEOUT)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver, live_server: str) -> WebDriver:
    """The page freshly loaded, with the service reported ready."""
    browser.get(live_server.rstrip("/") + "/")
    wait(browser, lambda d: by_id(d, "health").get_attribute("data-state") == "ready")
    return browser


@pytest.fixture(scope="module")
def cases() -> dict[str, Path]:
    """The first held-out file of each true class."""
    labels = json.loads((HELDOUT / "labels.json").read_text())
    first: dict[str, Path] = {}
    for case in labels:
        first.setdefault(case["class"], HELDOUT / case["file"])
    return first


def wait(driver: WebDriver, condition: Callable[[WebDriver], object], timeout: float = TIMEOUT):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def by_id(driver: WebDriver, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def app_state(driver: WebDriver) -> str:
    return by_id(driver, "app").get_attribute("data-state") or ""


def choose(driver: WebDriver, paths: list[Path]) -> None:
    """Put files in the page's file input as a user choosing them would, and wait for the list."""
    before = len(driver.find_elements(By.CSS_SELECTOR, "#file-list li"))
    by_id(driver, "file-input").send_keys("\n".join(str(p.resolve()) for p in paths))
    wait(
        driver,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#file-list li")) == before + len(paths),
    )


def analyse(driver: WebDriver) -> str:
    """Click Analyse and wait until the page shows results or an error; return which."""
    button = by_id(driver, "analyse-btn")
    assert button.is_enabled()
    button.click()
    wait(driver, lambda d: app_state(d) in ("done", "error"))
    wait(driver, lambda d: by_id(d, "analyse-btn").is_enabled())
    return app_state(driver)


def error_text(driver: WebDriver) -> str:
    return by_id(driver, "error-message").text


def blob_text(driver: WebDriver, button_id: str, as_latin1: bool = False) -> str:
    """Read the object URL behind a download button from inside the page."""
    url = by_id(driver, button_id).get_attribute("data-href")
    assert url and url.startswith("blob:"), url
    return driver.execute_async_script(
        """
        const [url, latin1, done] = arguments;
        fetch(url).then(r => r.arrayBuffer()).then(buf => {
          const bytes = new Uint8Array(buf);
          const head = String.fromCharCode(...bytes.slice(0, 64));
          done(latin1 ? head : new TextDecoder().decode(bytes));
        }, e => done('fetch failed: ' + e));
        """,
        url,
        as_latin1,
    )


def screenshot(driver: WebDriver, name: str) -> None:
    folder = os.environ.get("MRISCRIBE_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_page_loads_self_contained_and_reports_ready(page: WebDriver, live_server: str) -> None:
    assert "mriscribe" in page.title
    health = httpx.get(live_server.rstrip("/") + "/health", timeout=TIMEOUT).json()
    assert by_id(page, "health-label").text == "Ready"
    detector = health.get("models", {}).get("detector", {}).get("name")
    if detector:
        assert detector in by_id(page, "health-detail").text
    # Everything the page loaded came from the server itself (the machine is offline).
    origins = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert set(origins) <= {live_server.rstrip("/")}, origins
    # No script errors and no failed loads (a 503 from /health while loading is expected).
    severe = [
        e
        for e in page.get_log("browser")
        if e["level"] == "SEVERE" and not (e["source"] == "network" and "/health" in e["message"])
    ]
    assert not severe, severe
    # Nothing to analyse yet.
    assert not by_id(page, "analyse-btn").is_enabled()
    assert not by_id(page, "results").is_displayed()


@pytest.mark.parametrize("true_class", ["Glioma", "No Tumor"])
def test_one_image_shows_annotated_image_findings_report_and_downloads(
    page: WebDriver, cases: dict[str, Path], true_class: str
) -> None:
    path = cases[true_class]
    choose(page, [path])
    assert path.name in by_id(page, "file-list").text
    assert analyse(page) == "done", error_text(page)

    cards = page.find_elements(By.CSS_SELECTOR, "#image-cards .image-card")
    assert len(cards) == 1
    card = cards[0]
    assert path.name in card.text
    image = card.find_element(By.CSS_SELECTOR, "img.annotated-image")
    assert image.get_attribute("src").startswith("data:image/")
    wait(page, lambda d: d.execute_script("return arguments[0].complete", image))
    assert page.execute_script("return arguments[0].naturalWidth", image) > 0

    classes = [
        li.get_attribute("data-class") for li in card.find_elements(By.CSS_SELECTOR, ".finding")
    ]
    assert true_class in classes
    assert true_class in card.find_element(By.CSS_SELECTOR, ".findings").text
    assert "%" in card.find_element(By.CSS_SELECTOR, ".finding-conf").text

    summary = by_id(page, "summary")
    positive = true_class != "No Tumor"
    assert summary.get_attribute("data-positive") == ("true" if positive else "false")
    headline = by_id(page, "summary-headline").text
    if positive:
        assert true_class in headline
        size = card.find_element(
            By.CSS_SELECTOR, f'.finding[data-class="{true_class}"] .finding-size'
        )
        assert " mm" in size.text
        if "(estimate)" in size.text:  # PNG carries no spacing: the page must say so
            assert by_id(page, "size-warning").is_displayed()
    else:
        assert headline == "No tumour detected by the automated system"
    assert "no tumour present" not in page.find_element(By.TAG_NAME, "body").text.lower()

    sections = [
        s.get_attribute("data-section")
        for s in page.find_elements(By.CSS_SELECTOR, "#report-sections .report-section")
    ]
    assert [s for s in sections if s in REPORT_ORDER] == REPORT_ORDER, sections
    findings = page.find_element(By.CSS_SELECTOR, '.report-section[data-section="FINDINGS"] p')
    assert findings.text.strip()

    assert by_id(page, "download-pdf").is_enabled()
    assert by_id(page, "download-json").is_enabled()
    assert blob_text(page, "download-pdf", as_latin1=True).startswith("%PDF")
    results = json.loads(blob_text(page, "download-json"))
    assert "pdf_base64" not in results
    assert all("annotated_image" not in i for i in results["detection_results"]["images"])
    assert results["detection_results"]["images"][0]["filename"] == path.name
    screenshot(page, f"one-{true_class.replace(' ', '-').lower()}.png")


def test_non_image_shows_the_servers_error_naming_the_file(
    page: WebDriver, live_server: str, tmp_path: Path
) -> None:
    fake = tmp_path / "scan.png"
    fake.write_bytes(b"this is a text file, not a scan\n" * 20)
    choose(page, [fake])
    assert analyse(page) == "error"

    direct = httpx.post(
        live_server.rstrip("/") + "/analyze-json",
        files={"images": ("scan.png", fake.read_bytes(), "image/png")},
        timeout=TIMEOUT,
    )
    assert direct.status_code in (400, 415)
    message = direct.json()["error"]
    assert "scan.png" in message
    assert by_id(page, "error").is_displayed()
    assert error_text(page) == message
    assert str(direct.status_code) in by_id(page, "error-title").text
    assert not by_id(page, "results").is_displayed()
    screenshot(page, "error.png")


def test_network_failure_has_its_own_message(page: WebDriver, cases: dict[str, Path]) -> None:
    choose(page, [cases["Glioma"]])
    # Send the upload to a port nothing listens on, as if the server had gone away.
    page.execute_script(
        """
        const open = XMLHttpRequest.prototype.open;
        XMLHttpRequest.prototype.open = function (method, url, ...rest) {
          return open.call(this, method, 'http://127.0.0.1:9/analyze-json', ...rest);
        };
        """
    )
    assert analyse(page) == "error"
    assert by_id(page, "error-title").text == "Network error"
    assert "Could not reach the mriscribe server" in error_text(page)


def test_two_files_show_two_image_cards(page: WebDriver, cases: dict[str, Path]) -> None:
    choose(page, [cases["Glioma"], cases["Meningioma"], cases["No Tumor"]])
    # Remove the middle one again from the list.
    page.find_elements(By.CSS_SELECTOR, "#file-list .remove-btn")[1].click()
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#file-list li")) == 2)
    assert cases["Meningioma"].name not in by_id(page, "file-list").text
    assert analyse(page) == "done", error_text(page)

    cards = page.find_elements(By.CSS_SELECTOR, "#image-cards .image-card")
    assert [c.get_attribute("data-image-number") for c in cards] == ["1", "2"]
    assert cases["Glioma"].name in cards[0].text
    assert cases["No Tumor"].name in cards[1].text
    for card in cards:
        image = card.find_element(By.CSS_SELECTOR, "img.annotated-image")
        wait(page, lambda d, image=image: d.execute_script("return arguments[0].complete", image))
        assert page.execute_script("return arguments[0].naturalWidth", image) > 0
    assert "2" in by_id(page, "summary-facts").text
    screenshot(page, "two.png")


def test_a_dicom_series_shows_its_lesion_with_side_and_extent(
    page: WebDriver, tmp_path: Path
) -> None:
    """A shuffled DICOM series of a real head with a glioma on the patient's left: one row in
    the lesion table, left, with an extent; a PNG's lesion has none."""
    import nibabel as nib
    import numpy as np

    from mriscribe.training.dicom_series import add_lesion, shuffled_files, volume_to_dicom

    head = nib.load("/usr/share/mricron/templates/ch2.nii.gz")
    volume = np.asarray(head.dataobj, dtype=np.float32)
    painted, _ = add_lesion(volume, head.affine, (-30.0, -10.0, 15.0), (16.0, 18.0, 15.0))
    files = volume_to_dicom(painted, head.affine, slices=list(range(71, 123, 3)))
    paths = []
    for name, data in shuffled_files(files, seed=5):
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(path)
    choose(page, paths)
    assert analyse(page) == "done", error_text(page)
    rows = page.find_elements(By.CSS_SELECTOR, "#lesion-rows tr")
    assert not by_id(page, "lesions").get_attribute("hidden")
    texts = [row.text for row in rows]
    left = [text for text in texts if " left " in f" {text} " and "Glioma" in text]
    assert left, texts
    assert " mm on image " in left[0] and " ml" in left[0]
    screenshot(page, "series.png")
