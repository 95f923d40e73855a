"""A real headless Chromium, Debian's ``/usr/bin/chromium``, driven by Playwright.

Playwright's own browser builds are never downloaded: it launches the system Chromium
(``executable_path``), with the flags that keep it off the network on a closed machine.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Page, sync_playwright

# Chromium's own background traffic (updates, sync, safe browsing) stays off: the tests'
# machine reaches nothing but 127.0.0.1.
QUIET_FLAGS = [
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[Page]:
    """One page in a fresh headless Chromium (a new, empty profile each time)."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=QUIET_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def sign_in_to_airflow(page: Page, base: str, username: str, password: str) -> None:
    """Airflow's login form, filled in and sent as a user would."""
    page.goto(f"{base}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
