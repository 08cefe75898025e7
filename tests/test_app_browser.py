"""The app in a real browser: Debian's headless Chromium driven by Selenium opens the page,
uploads a photo, runs a restore and waits for the before/after slider. The screenshot is
kept in the test's tmp folder and copied to /tmp/restorekit_app_screenshot.png."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the app tests need gradio (pip install 'restorekit[app]')")
pytest.importorskip("selenium", reason="the browser test needs selenium (pip install 'restorekit[test]')")

from PIL import Image

from conftest import SHARED_WEIGHTS
from faces_common import random_model_file

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MODEL = "realesr-animevideov3"
SCREENSHOT_COPY = Path("/tmp/restorekit_app_screenshot.png")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def click(wait, element) -> None:
    """Click once the page's layout has settled (Gradio animates blocks in on load)."""
    from selenium.common.exceptions import ElementClickInterceptedException

    def attempt(_) -> bool:
        try:
            element.click()
        except ElementClickInterceptedException:
            return False
        return True

    wait.until(attempt)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from restorekit import models
    from restorekit.registry.download import target_path
    from restorekit.registry.home import ModelHome, configure_home
    from restorekit.registry.schema import load_registry

    home = tmp_path_factory.mktemp("browser-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESTOREKIT_HOME", str(home))
        mp.setenv("RESTOREKIT_OFFLINE", "1")
        configure_home(None)
        models.clear_cache()
        target = target_path(load_registry().get(MODEL), ModelHome(root=home.resolve()))
        target.parent.mkdir(parents=True, exist_ok=True)
        shared = SHARED_WEIGHTS / f"{MODEL}.safetensors"
        target.symlink_to(shared if shared.is_file() else random_model_file(MODEL, tmp_path_factory.mktemp("random")))

        from gradio_app.ui import AppConfig, launch

        demo, url = launch(AppConfig(port=free_port()), prevent_thread_lock=True, quiet=True)
        try:
            yield url
        finally:
            demo.close()
            models.clear_cache()
            configure_home(None)


@pytest.fixture
def browser() -> Iterator[object]:
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip(f"Debian's chromium and chromedriver are needed ({CHROMIUM}, {CHROMEDRIVER})")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, "--window-size=1400,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_restore_in_a_real_browser(app_url: str, browser, tmp_path: Path, chelsea: np.ndarray) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "chelsea.png"
    Image.fromarray(chelsea).resize((150, 100), Image.Resampling.LANCZOS).save(photo)  # the whole cat, small
    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(app_url)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#restore-input input[type=file]")))
    upload.send_keys(str(photo))
    wait.until(ec.text_to_be_present_in_element((By.ID, "restore-input"), "KB"))  # uploaded (name and size shown)
    driver.find_element(By.ID, "restore-button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "restore-status"), "Restored with"))

    def slider_loaded(d) -> bool:
        images = d.find_elements(By.CSS_SELECTOR, "#result-slider img")
        return len(images) >= 2 and all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) for img in images
        )

    wait.until(slider_loaded)
    widths = [driver.execute_script("return arguments[0].naturalWidth", img) for img in driver.find_elements(By.CSS_SELECTOR, "#result-slider img")]
    assert widths[:2] == [600, 600]  # before (resized to the output) and after: 150 px x 4
    assert "chelsea_restored.png (600×400)" in driver.find_element(By.ID, "restore-status").text
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    host = app_url.rstrip("/")
    assert all(name.startswith((host, "data:", "blob:")) for name in resources), [n for n in resources if not n.startswith(host)]

    shot = tmp_path / "restorekit_app.png"
    driver.save_screenshot(str(shot))
    shutil.copyfile(shot, SCREENSHOT_COPY)
    assert Image.open(shot).size[0] >= 1000


def test_cancel_button_stops_the_engine(app_url: str, browser, tmp_path: Path, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zero-shot job far too long to finish is running (progress shown); Cancel stops the
    engine at its next step (CancelledError inside the job) and the app serves the next one."""
    import threading

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from restorekit.restore import Restorer

    outcomes: list[str] = []
    started = threading.Event()
    original = Restorer.run_image

    def recorded(self, image, **kwargs):
        started.set()
        try:
            result = original(self, image, **kwargs)
        except BaseException as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append("done")
        return result

    monkeypatch.setattr(Restorer, "run_image", recorded)
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut[::8, ::8]).save(photo)
    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(app_url)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#restore-input input[type=file]")))
    upload.send_keys(str(photo))
    wait.until(ec.text_to_be_present_in_element((By.ID, "restore-input"), "KB"))
    def clicked(element):
        return click(wait, element)

    model = driver.find_element(By.CSS_SELECTOR, "#restore-model input")
    clicked(model)
    model.send_keys(Keys.CONTROL, "a")
    model.send_keys("Zero-shot", Keys.ENTER)
    wait.until(lambda d: model.get_attribute("value").startswith("Zero-shot SR"))
    clicked(driver.find_element(By.XPATH, "//button[contains(., 'Advanced')]"))
    iterations = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#zssr-iterations input")))
    iterations.clear()
    iterations.send_keys("1000000")
    clicked(driver.find_element(By.ID, "restore-button"))
    assert started.wait(60)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".progress-text, .progress-level, .eta-bar")))
    driver.save_screenshot(str(tmp_path / "running.png"))
    clicked(driver.find_element(By.ID, "cancel-button"))
    WebDriverWait(driver, 60).until(lambda d: outcomes)
    assert outcomes == ["CancelledError"]

    iterations.clear()
    iterations.send_keys("2")
    clicked(driver.find_element(By.ID, "restore-button"))
    wait.until(ec.text_to_be_present_in_element((By.ID, "restore-status"), "astronaut_restored.png (128×128)"))
    assert outcomes == ["CancelledError", "done"]


def test_closing_the_tab_stops_its_job(app_url: str, browser, tmp_path: Path, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's unload cancels its running engine job, so a closed tab frees the device."""
    import threading

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from restorekit.restore import Restorer

    outcomes: list[str] = []
    started = threading.Event()
    finished = threading.Event()
    original = Restorer.run_image

    def recorded(self, image, **kwargs):
        started.set()
        try:
            return original(self, image, **kwargs)
        except BaseException as exc:
            outcomes.append(type(exc).__name__)
            raise
        finally:
            finished.set()

    monkeypatch.setattr(Restorer, "run_image", recorded)
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut[::8, ::8]).save(photo)
    driver = browser
    wait = WebDriverWait(driver, 60)
    driver.get(app_url)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#restore-input input[type=file]"))).send_keys(str(photo))
    wait.until(ec.text_to_be_present_in_element((By.ID, "restore-input"), "KB"))
    model = driver.find_element(By.CSS_SELECTOR, "#restore-model input")
    click(wait, model)
    model.send_keys(Keys.CONTROL, "a")
    model.send_keys("Zero-shot", Keys.ENTER)
    wait.until(lambda d: model.get_attribute("value").startswith("Zero-shot SR"))
    click(wait, driver.find_element(By.XPATH, "//button[contains(., 'Advanced')]"))
    iterations = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#zssr-iterations input")))
    iterations.clear()
    iterations.send_keys("1000000")
    click(wait, driver.find_element(By.ID, "restore-button"))
    assert started.wait(60)
    driver.quit()  # the tab goes away mid-job
    assert finished.wait(60)
    assert outcomes == ["CancelledError"]
