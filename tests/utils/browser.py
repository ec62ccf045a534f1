"""Headless Chromium for the web console's tests: Debian's ``chromium`` + ``chromium-driver``
driven by selenium (scripts/ci_services.sh installs the packages, ``make venv`` selenium).

Nothing is downloaded: the browser and driver are the system's, found on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def artifacts_dir(name: str) -> Path:
    """Folder for a test's artifacts (screenshots): ``$MMLOP_TEST_ARTIFACTS/<name>``, else
    ``var/test-artifacts/<name>`` in the repository (ignored by git); created if absent."""
    base = Path(os.environ.get("MMLOP_TEST_ARTIFACTS") or REPO / "var" / "test-artifacts")
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unavailable(reason: str) -> None:
    """Fail under CI=true (the browser test must run there); skip with ``reason`` elsewhere."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason} (CI=true: the browser test may not be skipped)")
    pytest.skip(reason)


def require_chromium() -> tuple[str, str]:
    """Paths of the chromium binary and of chromedriver; fails under CI, skips elsewhere, when
    either (or the selenium package) is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        _unavailable("chromium and chromedriver are not on PATH: apt-get install chromium "
                     "chromium-driver (scripts/ci_services.sh does)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed: make venv installs it (pyproject.toml dev extra)")
    return browser, driver


def start_chromium(download_dir: Path, width: int = 1280, height: int = 1400) -> Any:
    """A headless ``selenium.webdriver.Chrome`` on the system's chromium, recording the network
    (``network_requests``) and console (``console_errors``) logs; downloads go to
    ``download_dir``. The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    options.add_experimental_option("prefs", {
        "download.default_directory": str(download_dir), "download.prompt_for_download": False,
    })
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.execute_cdp_cmd("Page.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(download_dir)})
    return chrome


def network_requests(chrome: Any) -> list[dict]:
    """The requests the page sent since the last call: ``{"url", "method", "headers", "type"}``
    of each ``Network.requestWillBeSent`` (type ``Fetch`` for fetch(), ``Document``, ``Script``,
    ...), from Chrome's performance log, which reading drains."""
    out = []
    for entry in chrome.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            out.append({**params["request"], "type": params.get("type")})
    return out


def console_errors(chrome: Any) -> list[str]:
    """SEVERE console messages since the last call, except failed-response lines (the page
    meets 4xx answers on purpose: problem details, a missing events route)."""
    return [entry["message"] for entry in chrome.get_log("browser")
            if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]]
