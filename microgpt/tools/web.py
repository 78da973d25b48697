"""`microgpt web`: the browser page, where this package trains, samples and opens up, run by Pyodide.

    microgpt web                      serve it on http://127.0.0.1:8000/ (--port N; --open opens a browser)
    microgpt web --build site/        write it as a static site, to host anywhere (any static file server)

The site is the page (microgpt/web/: index.html, app.js, worker.js, style.css), the package's own
sources under py/ (the worker copies them into Pyodide and imports them), and manifest.json naming
those files and where Pyodide is: the local copy in web/node_modules/pyodide when `npm ci --prefix web`
has installed it (then nothing is fetched from the network), else the official CDN build of the same
version, the one web/package.json pins.
"""

import functools
import http.server
import json
import os
import shutil
import tempfile
import webbrowser

from microgpt import durable
from microgpt.errors import UsageError

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # microgpt/
REPO = os.path.dirname(PACKAGE)
PAGE = os.path.join(PACKAGE, "web")
PAGE_FILES = ("index.html", "app.js", "worker.js", "style.css")
LOCAL_PYODIDE = os.path.join(REPO, "web", "node_modules", "pyodide")
PYODIDE_VERSION = "314.0.7"  # as web/package.json pins it (tests/test_web.py checks they agree)
CDN_PYODIDE = f"https://cdn.jsdelivr.net/pyodide/v{PYODIDE_VERSION}/full/"
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json")


def package_sources() -> list[str]:
    """The package files the worker needs, relative to the repo: every .py file and the embedded names."""
    paths = []
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        paths += [os.path.relpath(os.path.join(folder, f), REPO) for f in sorted(files) if f.endswith(".py")]
    return paths + [os.path.join("microgpt", "data", "names.txt")]


def local_pyodide() -> str | None:
    """The local Pyodide folder, when `npm ci --prefix web` installed the pinned version; else None."""
    try:
        with open(os.path.join(LOCAL_PYODIDE, "package.json"), encoding="utf-8") as f:
            version = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return None
    if version != PYODIDE_VERSION or not all(os.path.exists(os.path.join(LOCAL_PYODIDE, f)) for f in PYODIDE_FILES):
        return None
    return LOCAL_PYODIDE


def build(site: str, link: bool = False) -> str:
    """Write the static site into `site` (link: symlink the big Pyodide files instead of copying them).
    Returns where Pyodide will be loaded from."""
    durable.refuse_broken_link(site, "--build")
    if os.path.exists(site) and not os.path.isdir(site):
        raise UsageError(f"--build {site} is a file; give a directory for the site")
    if os.path.isdir(site) and os.listdir(site) and not os.path.exists(os.path.join(site, "manifest.json")):
        raise UsageError(f"--build {site} is a non-empty directory that is not a microgpt site; "
                         f"give a new or empty directory, so that nothing of yours is overwritten")
    fresh = not os.path.isdir(site) or not os.listdir(site)   # then a failed build leaves nothing there
    try:
        return write_site(site, link)
    except OSError as e:
        if fresh:
            for name in os.listdir(site) if os.path.isdir(site) else []:
                path = os.path.join(site, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        left = "nothing was left there" if fresh else "run it again to finish the site"
        raise UsageError(f"cannot write the site into --build {site} ({e.strerror or e}); {durable.what_to_do(e)} "
                         f"({left})") from None


def write_site(site: str, link: bool) -> str:
    """build's writing: the page, our Python sources, Pyodide (or its CDN address), and manifest.json last."""
    os.makedirs(site, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copyfile(os.path.join(PAGE, name), os.path.join(site, name))
    sources = package_sources()
    for rel in sources:
        target = os.path.join(site, "py", rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(REPO, rel), target)
    local = local_pyodide()
    if local:
        os.makedirs(os.path.join(site, "pyodide"), exist_ok=True)
        for name in PYODIDE_FILES:
            target = os.path.join(site, "pyodide", name)
            if os.path.lexists(target):
                os.remove(target)
            (os.symlink if link else shutil.copyfile)(os.path.join(local, name), target)
    manifest = {"pyodide": "pyodide/" if local else CDN_PYODIDE, "pyodide_version": PYODIDE_VERSION,
                "files": [rel.replace(os.sep, "/") for rel in sources]}
    with open(os.path.join(site, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return "the local copy in web/node_modules/pyodide" if local else f"the CDN ({CDN_PYODIDE})"


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript"}

    def log_message(self, format, *args):  # keep the terminal for the URL and errors
        pass


def serve(port: int, open_browser: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="microgpt-web-") as site:
        where = build(site, link=True)
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=site))
        except OSError as e:
            raise UsageError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}); pick another --port") from None
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        print(f"microgpt in the browser: {url}  (Pyodide from {where}; Ctrl-C stops)", flush=True)
        if open_browser:
            webbrowser.open(url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def add_arguments(p) -> None:
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000; 0: any free port)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--build", metavar="DIR", help="write the page as a static site into DIR instead of serving it")


def run(args) -> int:
    if args.build:
        where = build(args.build)
        print(f"wrote the site to {args.build} (Pyodide from {where}); serve it with any static file server, "
              f"e.g. python -m http.server -d {args.build}")
        return 0
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535 (got {args.port})")
    serve(args.port, args.open)
    return 0

