"""The browser test's requirement policy (tests/utils/browser.py): without chromium it fails
under CI=true and skips, with the reason, elsewhere; with it, it finds both binaries."""

from __future__ import annotations

import shutil

import pytest

from utils.browser import require_chromium


@pytest.fixture
def no_browser(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no chromium, no chromedriver


def test_missing_chromium_fails_under_ci(no_browser, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium chromium-driver"):
        require_chromium()


def test_missing_chromium_skips_outside_ci(no_browser, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium and chromedriver are not on PATH"):
        require_chromium()


def test_finds_the_system_browser_and_driver():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium is not installed here (the cases above cover its absence)")
    browser, driver = require_chromium()
    assert browser.endswith("chromium") and driver.endswith("chromedriver")
