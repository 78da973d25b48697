"""The browser page in a real browser: `microgpt web` serves it, headless Chromium (Debian's, driven by
Playwright) runs it, Pyodide from web/node_modules runs the package in a Web Worker, and nothing may
reach the network (every request off 127.0.0.1 is refused, and host names do not resolve).

Checks: no console errors; with seed 42 on ../shared/data/names.txt (uploaded through the page) the log
has the reference run's header counts and losses; a URL-configured run (autostart) prints exactly what
`microgpt train` prints; every chart has pixels drawn; the downloaded checkpoint samples with
`microgpt sample` as the page does; a CLI checkpoint uploaded to the page samples the CLI's names;
each bad input shows its message in the page, which stays usable. Skips, saying why, without chromium,
playwright or the local Pyodide (`npm ci --prefix web`).

    python -m pytest -q tests/test_web.py
"""

import io
import json
import os
import re
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from conftest import NAMES, REPO, parse_run, run_cli
from microgpt.tools import web

pytestmark = pytest.mark.slow  # minutes of subprocesses: scripts/test.sh --fast leaves this module out

CHROMIUM = "/usr/bin/chromium"
LOCAL_ONLY = ("127.0.0.1", "localhost")
TIMEOUT_MS = 240_000


def test_package_json_pins_the_version_the_server_names():
    with open(os.path.join(REPO, "web", "package.json"), encoding="utf-8") as f:
        assert json.load(f)["dependencies"]["pyodide"] == web.PYODIDE_VERSION
    with open(os.path.join(REPO, "web", "package-lock.json"), encoding="utf-8") as f:
        assert json.load(f)["packages"]["node_modules/pyodide"]["version"] == web.PYODIDE_VERSION


def test_build_refuses_a_directory_of_other_files(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    out = run_cli("web", "--build", tmp_path)
    assert out.returncode == 2 and "not a microgpt site" in out.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize("error, fix", [("ENOSPC", "free some space, or choose another folder"),
                                        ("EACCES", "choose a folder you can write to")])   # no "free some space"
def test_a_build_the_disk_cannot_hold_leaves_nothing_and_can_run_again(tmp_path, monkeypatch, error, fix):
    """A full disk mid-build named our own source file as the culprit and left half a site without its
    manifest, which the next build refused as "not a microgpt site". A new folder is now left empty."""
    import errno
    import shutil
    copy, calls, number = shutil.copyfile, [], getattr(errno, error)

    def copy_until_full(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) > 5:
            raise OSError(number, os.strerror(number), src)
        return copy(src, dst, *args, **kwargs)
    monkeypatch.setattr(shutil, "copyfile", copy_until_full)
    site = tmp_path / "site"
    with pytest.raises(web.UsageError) as refused:
        web.build(str(site))
    assert str(refused.value) == (f"cannot write the site into --build {site} ({os.strerror(number)}); {fix} "
                                  f"(nothing was left there)")
    assert list(site.iterdir()) == []
    monkeypatch.setattr(shutil, "copyfile", copy)   # room again: the same command builds the site
    web.build(str(site))
    assert (site / "manifest.json").is_file()


def test_build_without_the_local_pyodide_loads_the_cdn_build_of_the_pinned_version(tmp_path, monkeypatch):
    monkeypatch.setattr(web, "LOCAL_PYODIDE", str(tmp_path / "absent"))
    web.build(str(tmp_path / "site"))
    with open(tmp_path / "site" / "manifest.json", encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["pyodide"] == f"https://cdn.jsdelivr.net/pyodide/v{web.PYODIDE_VERSION}/full/"
    assert not (tmp_path / "site" / "pyodide").exists()
    for rel in manifest["files"]:  # every source the worker fetches is there
        assert (tmp_path / "site" / "py" / rel).is_file(), rel
    assert "microgpt/web/driver.py" in manifest["files"] and "microgpt/atomic.py" in manifest["files"]


# ---- the browser ---------------------------------------------------------------------------------
def need_browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("headless Chromium not installed at /usr/bin/chromium: apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -r requirements-test.txt")
    if web.local_pyodide() is None:
        pytest.skip(f"Pyodide {web.PYODIDE_VERSION} not installed in web/node_modules: npm ci --prefix web")


@pytest.fixture(scope="module")
def server():
    need_browser()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "microgpt", "web", "--port", "0"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    url = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert url and "local copy" in line, line
    yield url.group(0)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        context = chromium.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        refused = []

        def local_only(route):
            if urlparse(route.request.url).hostname in LOCAL_ONLY:
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()
        context.route("**/*", local_only)
        context.refused = refused
        yield context
        chromium.close()


class Page:
    """One page load, with its console errors collected."""

    def __init__(self, context, url):
        self.page = context.new_page()
        self.errors = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        self.wait("document.body.dataset.state !== 'loading' || !document.getElementById('error').hidden")
        assert self.page.get_attribute("body", "data-state") in ("ready", "training"), self.page.inner_text("#error")

    def wait(self, condition):
        self.page.wait_for_function(condition, timeout=TIMEOUT_MS)

    def log(self) -> str:
        return self.page.inner_text("#log")

    def error(self) -> str:
        return self.page.inner_text("#error") if self.page.is_visible("#error") else ""

    def train(self):
        self.page.click("#train")
        self.wait("['done', 'ready'].includes(document.body.dataset.state) || !document.getElementById('error').hidden")

    def expect_error(self, action, needle):
        """Do `action`, then the page must show an error containing `needle` and be ready again."""
        self.page.evaluate("document.getElementById('error').hidden = true")
        action()
        self.wait("!document.getElementById('error').hidden")
        assert needle in self.error(), self.error()
        self.wait("['done', 'ready'].includes(document.body.dataset.state)")

    def sample(self, **options) -> list[str]:
        for name, value in options.items():
            self.page.fill(f"#sample-form [name={name}]", str(value))
        self.page.evaluate("document.getElementById('sample-out').textContent = ''")
        self.page.click("#sample")
        self.wait("document.getElementById('sample-out').textContent !== '' || !document.getElementById('error').hidden")
        assert not self.error()
        return parse_run(self.page.inner_text("#sample-out"))["samples"]


@pytest.fixture(scope="module")
def reference_page(browser, server):
    """Seed 42 on makemore's names.txt, uploaded through the file picker: the reference run's schedule
    (1000 steps), stopped after 50 by train's own --stop-after. Without ../shared, the embedded names
    (then only the reference test skips)."""
    page = Page(browser, server + "?seed=42&steps=1000&stop_after=50&word=emma")
    if os.path.exists(NAMES):
        page.page.set_input_files("#data-file", NAMES)
    page.train()
    assert not page.error()
    return page


@pytest.fixture(scope="module")
def reference_data():
    from conftest import REFERENCE
    if not os.path.exists(REFERENCE) or not os.path.exists(NAMES):
        pytest.skip(f"reference run not found at {REFERENCE} (the ../shared folder beside the repo)")
    with open(REFERENCE) as f:
        return json.load(f)


def test_reference_run_in_the_page(reference_page, reference_data):
    printed = parse_run(reference_page.log())
    assert (printed["num_docs"], printed["vocab_size"], printed["num_params"]) == (
        reference_data["num_docs"], reference_data["vocab_size"], reference_data["num_params"])
    assert printed["losses"] == reference_data["printed_losses_4dp"][:50]
    assert "stopped after step 50 of 1000" in reference_page.log()


def near(pixels, colour, tolerance=40) -> int:
    """How many pixels are within `tolerance` of `colour` in every channel."""
    return sum(all(abs(a - b) <= tolerance for a, b in zip(p, colour)) for p in pixels)


def test_every_chart_is_drawn(reference_page):
    from PIL import Image
    page = reference_page.page
    page.wait_for_selector("canvas.attention-chart")
    heatmaps = [f"canvas.attention-chart >> nth={i}" for i in range(page.locator("canvas.attention-chart").count())]
    assert len(heatmaps) == 4  # the default model: 1 layer, 4 heads

    def pixels(selector):
        image = Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")
        return list(zip(*[iter(image.tobytes())] * 3))  # (r, g, b) of every pixel

    loss = pixels("#loss-chart")
    assert near(loss, (42, 79, 214)) > 300  # the running mean's line, across 50 steps
    for selector in heatmaps + ["#next-chart"]:
        cells = pixels(selector)
        inked = sum(min(p) < 230 for p in cells) / len(cells)  # share of pixels that are not (near) white
        assert inked > 0.3 and len(set(cells)) > 8, (selector, inked, len(set(cells)))
    embeddings = pixels("#embed-chart")
    assert near(embeddings, (214, 51, 108)) > 20 and near(embeddings, (42, 79, 214)) > 60  # vowels, consonants


def test_step_through_shows_atomic_lines_and_adam(reference_page):
    page = reference_page.page
    page.fill("#walk-form [name=param]", "layer0.attn_wq[3,5]")
    page.click("#walk")
    page.wait_for_selector("#walk-adam table")
    lines = page.inner_text("#walk-lines")
    for name in ("tok_emb", "attn_weights", "x_attn", "atomic.py:"):
        assert name in lines
    adam = page.inner_text("#walk-adam")
    assert "Adam on layer0.attn_wq[3,5]" in adam and "p.data -= update" in adam
    for tensor in ("wte", "wpe", "lm_head", "layer0.attn_wq", "layer0.mlp_fc2"):  # the gradient table
        assert f"\n{tensor}\t" in adam, tensor
    assert page.locator("#walk-positions button").count() == len("emma") + 1


def test_downloaded_checkpoint_samples_with_the_cli(reference_page, tmp_path):
    page = reference_page.page
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "checkpoint.safetensors"
    download.value.save_as(tmp_path / "checkpoint.safetensors")
    out = run_cli("sample", "--out", tmp_path, "--seed", 3, "--num", 10)
    assert out.returncode == 0, out.stderr
    assert parse_run(out.stdout)["samples"] == reference_page.sample(seed=3, num=10)


def test_uploaded_cli_checkpoint_samples_the_cli_names(reference_page, tmp_path):
    trained = run_cli("train", "--engine", "scalar", "--steps", 20, "--n-embd", 8, "--n-head", 2, "--samples", 0,
                      "--out", tmp_path)
    assert trained.returncode == 0, trained.stderr
    page = reference_page
    page.page.set_input_files("#ckpt-file", str(tmp_path / "checkpoint.safetensors"))
    page.wait("document.getElementById('log').textContent.includes('loaded the checkpoint')")
    cli = run_cli("sample", "--out", tmp_path, "--seed", 11, "--num", 8, "--prompt", "a", "--temperature", 0.8)
    assert cli.returncode == 0, cli.stderr
    assert page.sample(seed=11, num=8, prompt="a", temperature=0.8) == parse_run(cli.stdout)["samples"]


def test_pause_resume_and_stop(reference_page):
    page = reference_page
    page.page.check("input[name=data][value=embedded]")
    page.page.fill("#settings [name=stop_after]", "")
    page.page.fill("#settings [name=steps]", "5000")
    page.page.click("#train")
    step = "Number(document.body.dataset.step || 0)"
    page.wait(f"document.body.dataset.state === 'training' && {step} >= 20 && {step} < 5000")
    page.page.click("#pause")
    page.page.wait_for_timeout(1000)  # a chunk in flight may finish; then nothing more
    paused_at = int(page.page.get_attribute("body", "data-step"))
    page.page.wait_for_timeout(1500)
    assert int(page.page.get_attribute("body", "data-step")) == paused_at
    page.page.click("#resume")
    page.wait(f"{step} > {paused_at}")
    page.page.click("#stop")
    page.wait("document.body.dataset.state === 'done'")
    stopped_at = int(page.page.get_attribute("body", "data-step"))
    assert f"stopped at step {stopped_at} of 5000" in page.log()
    assert page.log().count("step ") >= stopped_at and "sample 20:" not in page.log()


def test_bad_input_shows_its_message_and_the_page_stays_usable(reference_page, tmp_path):
    page = reference_page
    files = {"binary.txt": b"emma\x00\x01\x02", "empty.txt": b"  \n\n",
             "large.txt": b"a\n" * (10 * 2**20 // 2 + 1)}
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    messages = {"binary.txt": "looks binary", "empty.txt": "empty or only whitespace", "large.txt": "up to 10 MB"}
    for name, needle in messages.items():
        page.page.set_input_files("#data-file", str(tmp_path / name))
        page.expect_error(lambda: page.page.click("#train"), needle)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    page.expect_error(lambda: page.page.set_input_files("#ckpt-file", str(tmp_path / "corrupt" / "checkpoint.safetensors")),
                      "corrupt or not a safetensors file")
    page.page.check("input[name=data][value=embedded]")
    page.page.fill("#settings [name=n_head]", "5")
    page.expect_error(lambda: page.page.click("#train"), "not divisible by --n-head 5")
    page.page.fill("#settings [name=n_head]", "4")
    page.page.fill("#settings [name=n_embd]", "512")
    page.expect_error(lambda: page.page.click("#train"), "the page trains up to 500,000")
    page.page.fill("#settings [name=n_embd]", "16")
    page.page.fill("#settings [name=lr]", "fast")
    page.expect_error(lambda: page.page.click("#train"), "argument --lr: invalid float value: 'fast'")
    page.page.fill("#settings [name=lr]", "0.01")
    page.page.fill("#sample-form [name=top_k]", "0")
    page.expect_error(lambda: page.page.click("#sample"), "--top-k must be >= 1")
    page.page.fill("#sample-form [name=top_k]", "")
    assert len(page.sample(seed=1, num=4)) == 4  # still usable: the worker is alive and the model still there
    page.page.check("input[name=data][value=text]")
    page.page.fill("#data-text", "ab\nba\naab\n")
    page.page.fill("#word", "ab")
    page.page.fill("#settings [name=steps]", "3")
    page.page.fill("#settings [name=stop_after]", "")
    page.train()
    assert not page.error() and "sample 20:" in page.log()
    assert not reference_page.errors and not page.page.context.refused


def test_url_parameters_configure_and_start_a_run(browser, server, tmp_path):
    settings = {"seed": 7, "steps": 6, "n_layer": 2, "n_embd": 8, "n_head": 2, "block_size": 8, "lr": 0.02,
                "val_docs": 30, "eval_every": 4, "batch_size": 2}
    page = Page(browser, server + "?" + "&".join(f"{k}={v}" for k, v in settings.items()) + "&autostart=1")
    page.wait("document.body.dataset.state === 'done' || !document.getElementById('error').hidden")
    assert not page.error()
    cli = run_cli("train", "--engine", "pure", *[a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", v)],
                  "--out", tmp_path)
    assert cli.returncode == 0, cli.stderr
    printed = cli.stdout.strip().splitlines()
    assert printed[-1] == f"checkpoint: {tmp_path / 'checkpoint.safetensors'}"  # the page has Download instead
    assert "val loss" in cli.stdout and page.log().strip() == "\n".join(printed[:-1])
    assert not page.errors
