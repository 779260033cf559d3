"""The plots and the release card's figures display in the Dagster UI: dagster-webserver on 127.0.0.1 over an
instance holding the materializations, the asset pages loaded in headless Chromium (driven over the DevTools
protocol), each metadata markdown opened, and every embedded image checked to have loaded (naturalWidth > 0)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from tests.analysis.scored_lake import write_scored_lake
from tests.conftest import REPO, free_port, require_system_package
from ultraedit_dagster.analysis.plots import card_markdown_for_ui
from ultraedit_dagster.core.profiles import get_profile
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.release.card import build_release
from ultraedit_dagster.release.selection import thresholds_by_mode

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.slow

# Images in the page that came from metadata markdown (data URLs), with whether each has loaded.
IMAGES_JS = (
    "JSON.stringify(Array.from(document.images).filter(i => i.src.startsWith('data:image/'))"
    ".map(i => [i.alt, i.complete, i.naturalWidth]))"
)
# Open the first markdown metadata entry (the UI shows markdown behind a "[Show Markdown]" link, in a dialog).
SHOW_MARKDOWN_JS = (
    "(() => { const e = Array.from(document.querySelectorAll('button, a, span, div')).filter("
    "x => x.children.length === 0 && (x.innerText || '').trim() === '[Show Markdown]'); "
    "if (e.length) { e[0].click(); } return e.length; })()"
)
# What the card used to embed: a relative figures/ link, which the UI cannot resolve (the probe can fail).
RELATIVE_LINK_JS = (
    "new Promise(r => { const i = new Image(); i.onload = () => r(i.naturalWidth); i.onerror = () => r(-1); "
    "i.src = 'figures/clip_sim_dir.png'; })"
)


class Browser:
    """Headless Chromium with a DevTools websocket (websocket-client, in the lock file through kubernetes)."""

    def __init__(self, profile_dir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--remote-debugging-port={self.port}",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile_dir}",
                "--window-size=1400,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import websocket

        deadline = time.time() + 60
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2))
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                return msg.get("result", msg)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def markdown_images(self, url: str, timeout_s: float = 120) -> list:
        """Open `url`, open its markdown metadata, return [[alt, complete, naturalWidth]] of the embedded images
        once they are all complete."""
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        deadline = time.time() + timeout_s
        images: list = []
        while time.time() < deadline:
            time.sleep(1.5)
            images = json.loads(self.js(IMAGES_JS) or "[]")
            if images and all(done for _, done, _ in images):
                return images
            if not images:
                self.js(SHOW_MARKDOWN_JS)
        return images

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A materialized instance (threshold_plots through Dagster; the release card's metadata as release_card
    builds it, from a real card over the same lake) and dagster-webserver serving it on 127.0.0.1."""
    require_system_package(CHROMIUM, "chromium")
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    lake = Lake(str(root / "lake"))
    write_scored_lake(lake)
    profile = get_profile("tiny")
    from ultraedit_dagster.analysis.assets import threshold_plots

    with dg.DagsterInstance.from_config(str(home)) as instance:
        resources = {"lake": LakeResource(root=lake.root), "pipeline": PipelineResource(profile_name="tiny")}
        assert dg.materialize([threshold_plots], instance=instance, resources=resources).success
        out = root / "lake" / "release"
        build_release(lake, out, thresholds=thresholds_by_mode(profile), gallery_size=4, title="ui test")
        card = card_markdown_for_ui((out / "README.md").read_text(), out)
        instance.report_runless_asset_event(
            dg.AssetMaterialization("release_card", metadata={"card": dg.MetadataValue.md(card)})
        )
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ULTRAEDIT_HOME": str(root / "home"),
        "ULTRAEDIT_LAKE": lake.root,
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    webserver = Path(sys.executable).parent / "dagster-webserver"
    log = open(root / "webserver.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(webserver), "-h", "127.0.0.1", "-p", str(port), "-m", "ultraedit_dagster.definitions"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the webserver starts a code server: stop both as one group
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (root / "webserver.log").read_text()[-3000:]
                assert time.time() < deadline, "dagster-webserver did not start in 300 s"
                time.sleep(1)
        browser = Browser(root / "chromium")
        try:
            yield base, browser, card
        finally:
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_threshold_plots_display_in_the_ui(ui):
    base, browser, _ = ui
    images = browser.markdown_images(f"{base}/assets/threshold_plots")
    assert sorted(alt for alt, _, _ in images) == [
        "free_form_histograms.png",
        "free_form_tradeoff.png",
        "region_histograms.png",
        "region_tradeoff.png",
    ]
    assert all(done and width > 0 for _, done, width in images), images


def test_release_card_figures_display_in_the_ui(ui):
    base, browser, card = ui
    images = browser.markdown_images(f"{base}/assets/release_card")
    expected = card.count("](data:image/png;base64,")
    assert expected == 7  # the card's histograms: six UltraEdit metrics and l1
    assert len(images) == expected and all(done and width > 0 for _, done, width in images), images
    # the link the card's metadata used to carry does not load in the UI: the probe above can tell
    assert browser.js(RELATIVE_LINK_JS) <= 0
