"""The page of ``mot serve`` (``GET /``) in a real headless Chromium, driven by Selenium: it shows
the model's tasks, streams a completion, draws an image, captions an uploaded file, and sends the
bearer token. Skipped where Chromium, its driver or Selenium is missing (never downloaded)."""

import base64
import json
import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("MOT_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MOT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))

for _path, _package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
    if not (_path.is_file() and os.access(_path, os.X_OK)):
        pytest.skip(f"browser tests need {_path} (Debian: apt-get install {_package})", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver", reason="browser tests need selenium (pip install selenium)")

import httpx  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from mot.serve.limits import ServeLimits  # noqa: E402
from mot.serve.server import BackgroundServer  # noqa: E402

WAIT = 30  # seconds; the small model answers in well under one

COMPLETION = {"prompt": "a red circle", "max_tokens": 8, "seed": 3, "temperature": 1.0}
IMAGE = {"prompt": "a blue square", "seed": 5}


@pytest.fixture(scope="module")
def server(served):
    with BackgroundServer(served, ServeLimits()) as server:
        yield server


@pytest.fixture(scope="module")
def secured(served):
    with BackgroundServer(served, ServeLimits(), token="secret") as server:
        yield server


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium (its own profile; the system driver, so Selenium Manager never runs)."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1200,1400",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, url):
    driver.get(url + "/")
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return document.body.dataset.ready"))
    assert driver.execute_script("return document.body.dataset.ready") == "true"


def run_and_wait(driver, element_id, start):
    """Starts a request with ``start()`` and waits until ``#element_id`` says it is done."""
    driver.execute_script(f"delete document.getElementById('{element_id}').dataset.state")
    start()
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script(f"return document.getElementById('{element_id}').dataset.state") == "done")
    return driver.execute_script(f"return document.getElementById('{element_id}').dataset.result")


def fill(driver, element_id, value):
    element = driver.find_element(By.ID, element_id)
    element.clear()
    element.send_keys(str(value))


def text_of(driver, element_id):
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def complete(driver, body):
    fill(driver, "completion-prompt", body["prompt"])
    fill(driver, "completion-max-tokens", body["max_tokens"])
    fill(driver, "completion-seed", body["seed"])
    fill(driver, "completion-temperature", body["temperature"])
    return run_and_wait(driver, "completion-output", driver.find_element(By.ID, "completion-run").click)


def test_page_shows_the_model_and_only_its_tasks(browser, server, served):
    open_page(browser, server.url)
    assert browser.find_element(By.ID, "model-name").text == served.name
    assert browser.find_element(By.ID, "model-setting").text == "chameleon"
    for section in ("completions", "images", "captions"):
        assert browser.find_element(By.ID, section).is_displayed(), section
    for section in ("speech", "transcriptions"):
        assert not browser.find_element(By.ID, section).is_displayed(), section
    assert browser.find_element(By.ID, "token").is_displayed()


def test_a_streamed_completion_is_the_apis_completion(browser, server):
    expected = httpx.post(server.url + "/v1/completions", json=COMPLETION, timeout=WAIT).json()
    with httpx.stream("POST", server.url + "/v1/completions", json=dict(COMPLETION, stream=True),
                      timeout=WAIT) as stream:
        events = [line[len("data: "):] for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(event)["choices"][0]["text"] for event in events[:-1]]

    open_page(browser, server.url)
    assert complete(browser, COMPLETION) == "ok", text_of(browser, "completion-error")
    assert text_of(browser, "completion-output") == expected["choices"][0]["text"]
    assert text_of(browser, "completion-error") == ""
    # the page appended the text a delta at a time, as the server sent it
    chunks = browser.execute_script("return document.getElementById('completion-output').dataset.chunks")
    assert int(chunks) == sum(1 for delta in deltas if delta)


def test_an_image_is_the_apis_png(browser, server):
    expected = httpx.post(server.url + "/v1/images", json=IMAGE, timeout=WAIT)
    assert expected.status_code == 200 and expected.headers["content-type"] == "image/png"

    open_page(browser, server.url)
    fill(browser, "image-prompt", IMAGE["prompt"])
    fill(browser, "image-seed", IMAGE["seed"])
    result = run_and_wait(browser, "image-output", browser.find_element(By.ID, "image-run").click)
    assert result == "ok", text_of(browser, "image-error")
    assert browser.execute_script("return document.getElementById('image-output').naturalWidth") > 0
    shown = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById('image-output').src).then((r) => r.blob()).then((blob) => {
          const reader = new FileReader();
          reader.onload = () => done(reader.result.split(',')[1]);
          reader.readAsDataURL(blob);
        }).catch((e) => done('failed: ' + e));""")
    assert base64.b64decode(shown) == expected.content


def test_an_uploaded_image_gets_the_apis_caption(browser, server, tmp_path):
    png = httpx.post(server.url + "/v1/images", json=IMAGE, timeout=WAIT).content
    path = tmp_path / "picture.png"
    path.write_bytes(png)
    expected = httpx.post(server.url + "/v1/captions", content=png, timeout=WAIT).json()["text"]

    open_page(browser, server.url)
    file_input = browser.find_element(By.ID, "caption-file")
    result = run_and_wait(browser, "caption-output", lambda: file_input.send_keys(str(path)))
    assert result == "ok", text_of(browser, "caption-error")
    assert text_of(browser, "caption-output") == expected
    assert browser.execute_script("return document.getElementById('caption-preview').naturalWidth") > 0


def test_the_token_is_sent_when_given(browser, secured):
    assert httpx.post(secured.url + "/v1/completions", json=COMPLETION, timeout=WAIT).status_code == 401
    expected = httpx.post(secured.url + "/v1/completions", json=COMPLETION, timeout=WAIT,
                          headers={"Authorization": "Bearer secret"}).json()["choices"][0]["text"]

    open_page(browser, secured.url)
    assert "needs a token" in browser.find_element(By.ID, "token-note").text
    assert browser.find_element(By.ID, "token").get_attribute("value") == ""
    assert complete(browser, COMPLETION) == "error"
    assert "bearer token" in browser.find_element(By.ID, "completion-error").text
    assert "401" in browser.find_element(By.ID, "completion-error").text

    browser.find_element(By.ID, "token").send_keys("secret")
    assert complete(browser, COMPLETION) == "ok", text_of(browser, "completion-error")
    assert text_of(browser, "completion-output") == expected
    assert text_of(browser, "completion-error") == ""
    # kept for the tab's session: a reload keeps it
    open_page(browser, secured.url)
    assert browser.find_element(By.ID, "token").get_attribute("value") == "secret"
