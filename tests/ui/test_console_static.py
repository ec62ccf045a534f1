"""The web console's files as the real server serves them (embedded stack, no browser): /ui leads
to /ui/, the page and its assets come from the API with a same-origin-only Content-Security-Policy,
nothing refers to another origin (no CDN, no external fonts), and a missing file is a
problem+json 404. The browser itself: tests/ui/test_console_browser.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

STATIC = Path(__file__).resolve().parents[2] / "api" / "console" / "static"
ASSETS = {"index.html": "text/html", "console.css": "text/css", "console.js": "text/javascript"}


@pytest.fixture(scope="module")
def ui(embedded_stack) -> httpx.Client:
    with httpx.Client(base_url=embedded_stack.base_url, timeout=30) as client:
        yield client


def test_ui_without_slash_leads_to_the_page(ui):
    resp = ui.get("/ui", follow_redirects=False)
    assert resp.status_code in (301, 307, 308), resp.text
    assert resp.headers["location"].endswith("/ui/")
    page = ui.get("/ui", follow_redirects=True)
    assert page.status_code == 200 and "<main" in page.text


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_assets_are_served_with_a_same_origin_policy(ui, name):
    resp = ui.get("/ui/" if name == "index.html" else f"/ui/{name}")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith(ASSETS[name])
    assert resp.content == (STATIC / name).read_bytes()
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_a_missing_file_is_a_problem_404(ui):
    resp = ui.get("/ui/nothing-here.js")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/problem+json")


def test_nothing_is_loaded_from_another_origin():
    """Every file is in the repository: no absolute URL, protocol-relative URL or @import."""
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"https?:|//[\w.-]+\.\w", text.replace("http-equiv", "")), path.name
        assert "@import" not in text, path.name


class _Controls(HTMLParser):
    """Collects form controls, label targets and landmarks of the page's static HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict] = []
        self.label_for: set[str] = set()
        self.tags: set[str] = set()
        self._open_labels = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "label":
            self._open_labels += 1
            if attrs.get("for"):
                self.label_for.add(attrs["for"])
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
            self.controls.append({**attrs, "_wrapped": self._open_labels > 0})

    def handle_endtag(self, tag):
        if tag == "label":
            self._open_labels -= 1


def test_every_control_has_a_label_and_the_page_has_landmarks():
    parser = _Controls()
    parser.feed((STATIC / "index.html").read_text())
    assert parser.controls, "no controls found"
    unlabelled = [c.get("id") or c.get("name") for c in parser.controls
                  if not c["_wrapped"] and c.get("id") not in parser.label_for]
    assert not unlabelled, f"controls without a <label>: {unlabelled}"
    assert {"header", "main", "h1", "h2"} <= parser.tags
