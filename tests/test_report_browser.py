"""A real browser opens report.html: headless Chromium loads the page, and every chart must be
decoded, laid out with a size, visible, and drawn (its pixels in a screenshot are not blank).

Needs Debian's `chromium` (apt-get install -y chromium) and matplotlib; skips, saying which is
missing, without them.

    python -m pytest -q tests/test_report_browser.py
"""

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

from microgpt.cli import main
from tiny_run import tiny_run

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed: apt-get install -y chromium")]
WIDTH = 1000

# Added to a copy of the page: once it has loaded, each <img> records what the browser made of it.
PROBE = """<script>
window.addEventListener('load', () => {
  for (const img of document.images) {
    const r = img.getBoundingClientRect(), s = getComputedStyle(img);
    img.dataset.probe = [img.complete, img.naturalWidth, img.naturalHeight, r.left + scrollX, r.top + scrollY,
                         r.width, r.height, s.visibility, s.display, s.opacity].join(' ');
  }
  document.body.dataset.height = document.documentElement.scrollHeight;
});
</script>"""


def chromium(*args, height=800) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars", "--force-device-scale-factor=1",
             f"--window-size={WIDTH},{height}", *args],
            capture_output=True, text=True, timeout=120, check=True)


class Probed(HTMLParser):
    """The probe's findings in the DOM that Chromium dumps: images by their section, the page height."""

    def __init__(self):
        super().__init__()
        self.images, self.height, self.section = {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs.get("id")
        elif tag == "body":
            self.height = int(attrs["data-height"])
        elif tag == "img":
            done, nw, nh, x, y, w, h, visibility, display, opacity = attrs["data-probe"].split()
            self.images[self.section] = {"decoded": done == "true" and int(nw) > 0 and int(nh) > 0,
                                         "box": (float(x), float(y), float(w), float(h)),
                                         "shown": visibility == "visible" and display != "none" and float(opacity) > 0}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    pytest.importorskip("matplotlib", reason="microgpt report needs matplotlib: pip install matplotlib")
    out = tiny_run(tmp_path_factory.mktemp("browser") / "run")
    assert main(["report", "--out", out, "--docs", "emma,liam", "--samples", "5", "--loss-docs", "4"]) == 0
    page = os.path.join(out, "report.html")
    with open(page, encoding="utf-8") as f:
        probe = os.path.join(out, "probe.html")
        with open(probe, "w", encoding="utf-8") as g:
            g.write(f.read().replace("</body>", PROBE + "</body>"))
    dom = Probed()
    dom.feed(chromium("--dump-dom", f"file://{probe}").stdout)
    shot = os.path.join(out, "screenshot.png")
    chromium(f"--screenshot={shot}", f"file://{page}", height=dom.height)
    from matplotlib.image import imread
    return dom, imread(shot)  # (height, width, channels) floats in [0, 1]


def test_every_chart_is_decoded_and_visible(rendered):
    dom, _ = rendered
    expected = ["loss", "lr", "attention-0", "attention-1", "embeddings", "after-bos", "loss-by-position"]
    assert list(dom.images) == expected
    for sid, img in dom.images.items():
        x, y, w, h = img["box"]
        assert img["decoded"] and img["shown"], sid
        assert w > 200 and h > 150 and x >= 0 and x + w <= WIDTH, (sid, img["box"])


def test_charts_in_the_screenshot_are_not_blank(rendered):
    dom, pixels = rendered
    assert pixels.shape[0] >= dom.height - 1 and pixels.shape[1] == WIDTH
    for sid, img in dom.images.items():
        x, y, w, h = (int(v) for v in img["box"])
        region = pixels[y:y + h, x:x + w, :3]
        inked = (region.min(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
        colours = len({tuple(p) for p in (region[::4, ::4].reshape(-1, 3) * 255).astype(int)})
        assert inked > 0.01 and colours > 8, (sid, inked, colours)
    top = pixels[:60, :, :3]
    assert (top.min(axis=2) < 0.5).any()  # the title's text is drawn too
