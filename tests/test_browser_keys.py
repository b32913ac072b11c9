"""The upload page against a server with API keys, in a real browser: a 401 shows the key
field, and with a key the analysis goes through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from access import Keys, make_keys
from conftest import HELDOUT, LiveServer
from test_browser import analyse, app_state, browser, by_id, choose, error_text, wait

__all__ = ["browser"]  # the module's browser fixture, shared


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"), reader="analyze")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, keys: Keys) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("keyed-page"), keys.env)
    yield server
    server.stop()


def test_the_page_asks_for_a_key_and_then_analyses(browser: WebDriver, keyed_server, keys):
    browser.get(keyed_server.url + "/")
    wait(browser, lambda d: by_id(d, "health").get_attribute("data-state") == "ready")
    assert not by_id(browser, "key-row").is_displayed()  # nothing to ask until it is needed
    choose(browser, [HELDOUT / "glioma_1.png"])
    assert analyse(browser) == "error"
    assert "API key" in error_text(browser)
    assert by_id(browser, "key-row").is_displayed()

    by_id(browser, "api-key").send_keys(keys.keys["reader"])
    assert analyse(browser) == "done", error_text(browser)
    assert app_state(browser) == "done"
    # The key stays with this tab, not in the page's address or anywhere on screen.
    assert keys.keys["reader"] not in browser.current_url
    assert keys.keys["reader"] not in browser.find_element("tag name", "body").text
