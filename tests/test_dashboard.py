"""optuna-dashboard on a search storage: the JSON API lists the study; headless Chromium renders its name.

The browser test needs Debian chromium (/usr/bin/chromium; ``playwright install`` cannot download browsers here)
and the playwright Python package. Without them it is skipped, unless ARENA_REQUIRE_BROWSER=1 (CI), which makes a
missing browser a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from arena.core.spec import preset
from arena.orchestration import dashboard
from arena.orchestration.search import storage as study_storage

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("ARENA_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ARENA_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dashboard.DashboardProcess, str]]:
    """A journal storage holding one small study, served on a free loopback port; stopped by PID afterwards."""
    storage = str(tmp_path_factory.mktemp("dash") / "optuna.journal")
    name = study_storage.study_name("gf_mh", preset("smoke"))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=name, storage=study_storage.open_storage(storage))
    study.set_user_attr("variant", "gf_mh")
    study.optimize(lambda t: (t.suggest_float("gate_init", 0.05, 0.95) - 0.3) ** 2, n_trials=3)
    server = dashboard.start_background(storage, "127.0.0.1")
    yield server, name
    server.stop()
    assert not Path(f"/proc/{server.pid}").exists() or server.proc.poll() is not None


def test_api_lists_the_study(served: tuple[dashboard.DashboardProcess, str]) -> None:
    server, name = served
    with urllib.request.urlopen(f"{server.base_url}/api/studies", timeout=10) as response:
        body = json.load(response)
    assert name in [s["study_name"] for s in body["study_summaries"]]


def test_argv_uses_the_journal_hint() -> None:
    argv = dashboard.dashboard_argv("/tmp/x.journal", "127.0.0.1", 8123)
    assert argv[1:] == [
        "/tmp/x.journal",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "--storage-class",
        "JournalFileStorage",
    ]
    assert "--storage-class" not in dashboard.dashboard_argv("sqlite:///x.db")


@pytest.mark.browser
def test_dashboard_renders_the_study_in_chromium(served: tuple[dashboard.DashboardProcess, str]) -> None:
    _require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    _require(importlib.util.find_spec("playwright") is not None, "playwright is not installed (pip install playwright)")
    from playwright.sync_api import sync_playwright

    server, name = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url)
            # A substring: the list renders "1. tune/gf_mh/smoke@…", and an exact match would time out.
            page.get_by_text(name).first.wait_for(timeout=30_000)
        finally:
            browser.close()
