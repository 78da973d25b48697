"""Time the browser page's default run: 1000 steps on the embedded names in headless Chromium.

    npm ci --prefix web                       # the pinned Pyodide (once)
    python scripts/bench_web.py               # the page's defaults: --engine pure, 1000 steps
    python scripts/bench_web.py --engine scalar --steps 100
    python scripts/bench_web.py --query 'val_docs=1000' --screenshot docs/web.png

It starts `microgpt web` on a free port, opens `?steps=N&engine=E&autostart=1` in Debian's chromium
(Playwright, no network), and prints the seconds from Train to the last of the 20 samples as the page
measured them (the worker's clock, what the page's status line shows), the wall time of the whole page
load, and the final loss line. Timings are noisy on a shared machine: note `uptime` beside them.
"""

import argparse
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", default="pure", help="pure (the page's default) or scalar")
    parser.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser (default /usr/bin/chromium)")
    parser.add_argument("--query", default="", help="more settings as URL parameters, e.g. 'val_docs=1000&word=olivia'")
    parser.add_argument("--screenshot", help="after the run, walk one step and save the whole page as this PNG "
                        "(docs/web.png is made so, with --query 'val_docs=1000')")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen([sys.executable, "-m", "microgpt", "web", "--port", "0"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        print(line.strip())
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            t0 = time.perf_counter()
            page.goto(f"{url}?steps={args.steps}&engine={args.engine}&autostart=1&{args.query}")
            page.wait_for_function("document.body.dataset.state === 'done' || !document.getElementById('error').hidden",
                                   timeout=3_600_000)
            wall = time.perf_counter() - t0
            if page.is_visible("#error"):
                print("the page reported:", page.inner_text("#error"))
                return 1
            seconds = float(page.get_attribute("body", "data-seconds"))
            last = [l for l in page.inner_text("#log").splitlines() if l.startswith("step")][-1]
            if args.screenshot:
                page.click("#walk")
                page.wait_for_selector("#walk-adam table")
                page.screenshot(path=args.screenshot, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"{args.steps} steps, engine {args.engine}, in the page: {seconds:.1f} s of training and sampling "
          f"({seconds / args.steps * 1000:.1f} ms/step); {wall:.1f} s from opening the page; {last.strip()}")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
