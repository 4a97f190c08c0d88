"""A screenshot of the page of ``mot serve`` for the docs.

    python scripts/serve_screenshot.py RUN_DIR --out docs/images/serve-page.png

Serves the run on a free loopback port, opens ``/`` in headless Chromium (the system's
``/usr/bin/chromium`` and ``/usr/bin/chromedriver``; nothing is downloaded), runs a streamed
completion, an image and its caption (and, for runs with speech, a speech and its transcription),
and saves a full-page PNG.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
from pathlib import Path

WAIT = 120  # seconds a request may take


def browser(chromium: str, chromedriver: str, profile: str, width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                     f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_script_timeout(WAIT)
    return driver


def run_and_wait(driver, output_id: str, start) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script(f"delete document.getElementById('{output_id}').dataset.state")
    start()
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script(f"return document.getElementById('{output_id}').dataset.state") == "done")
    result = driver.execute_script(f"return document.getElementById('{output_id}').dataset.result")
    if result != "ok":
        section = output_id.rsplit("-", 1)[0]
        error = driver.execute_script(f"return document.getElementById('{section}-error').textContent")
        raise SystemExit(f"{section} failed on the page: {error}")


def fill(driver, element_id: str, value) -> None:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, element_id)
    element.clear()
    element.send_keys(str(value))


def blob_of(driver, element_id: str) -> bytes:
    """The bytes behind an element's blob URL (what the page shows)."""
    data = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(document.getElementById(arguments[0]).src).then((r) => r.blob()).then((blob) => {
          const reader = new FileReader();
          reader.onload = () => done(reader.result.split(',')[1]);
          reader.readAsDataURL(blob);
        });""", element_id)
    return base64.b64decode(data)


def screenshot(driver) -> bytes:
    """The whole page (not just the window) as PNG bytes."""
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "fromSurface": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    return base64.b64decode(shot["data"])


def smaller(png: bytes, limit: int) -> bytes:
    """``png``, quantised to a palette when it is over ``limit`` bytes (and Pillow is there)."""
    if len(png) <= limit:
        return png
    try:
        from PIL import Image
    except ImportError:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue() if out.tell() < len(png) else png


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a trained run's directory")
    parser.add_argument("--out", default="docs/images/serve-page.png")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1400)
    parser.add_argument("--prompt", default="a red circle", help="the completion's and the image's prompt")
    parser.add_argument("--speech-prompt", default="the cat sat on the mat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args(argv)
    for path in (args.chromium, args.chromedriver):
        if not Path(path).is_file():
            parser.error(f"{path} is missing (Debian: apt-get install chromium chromium-driver)")

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mot.serve.limits import ServeLimits
    from mot.serve.served_model import ServedModel
    from mot.serve.server import BackgroundServer

    model = ServedModel.from_run(args.run_dir, log=lambda _: None)
    with tempfile.TemporaryDirectory(prefix="mot-screenshot-") as scratch, \
            BackgroundServer(model, ServeLimits()) as server:
        driver = browser(args.chromium, args.chromedriver, str(Path(scratch) / "profile"), args.width, args.height)
        try:
            driver.get(server.url + "/")
            WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return document.body.dataset.ready"))
            click = lambda element_id: (lambda: driver.find_element(By.ID, element_id).click())  # noqa: E731

            fill(driver, "completion-prompt", args.prompt)
            fill(driver, "completion-seed", args.seed)
            run_and_wait(driver, "completion-output", click("completion-run"))

            fill(driver, "image-prompt", args.prompt)
            fill(driver, "image-seed", args.seed)
            run_and_wait(driver, "image-output", click("image-run"))
            picture = Path(scratch) / "picture.png"
            picture.write_bytes(blob_of(driver, "image-output"))
            upload = driver.find_element(By.ID, "caption-file")
            run_and_wait(driver, "caption-output", lambda: upload.send_keys(str(picture)))

            if "speech" in model.tasks:
                fill(driver, "speech-prompt", args.speech_prompt)
                fill(driver, "speech-seed", args.seed)
                run_and_wait(driver, "speech-output", click("speech-run"))
                WebDriverWait(driver, WAIT).until(  # the player knows the duration
                    lambda d: d.execute_script("return document.getElementById('speech-output').readyState >= 1"))
                if "transcriptions" in model.tasks:
                    sound = Path(scratch) / "speech.wav"
                    sound.write_bytes(blob_of(driver, "speech-output"))
                    upload = driver.find_element(By.ID, "transcription-file")
                    run_and_wait(driver, "transcription-output", lambda: upload.send_keys(str(sound)))

            driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
            png = smaller(screenshot(driver), 300_000)
        finally:
            driver.quit()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    print(f"{out}: {len(png):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
