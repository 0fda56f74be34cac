"""Install the prebuilt OHIF viewer from npm so that labelloop serves it at ``/ohif/``.

``python web/ohif/install.py OUT`` takes the version pinned in ``ohif.json`` (``npm pack``, then
the tarball's SHA-512 checked against the pinned integrity, so a fresh machine gets the very same
files), unpacks its built site (``package/dist/``) into ``OUT`` and rewrites the absolute ``/``
paths it was built with to ``/ohif/``: ``index.html``, webpack's public path in the app and worker
bundles, ``url(/...)`` in the style sheets, the web manifest and ``browserconfig.xml``.

Left out: ``ort/`` (onnxruntime-web for OHIF's in-browser AI tools, 136 MB), the microscopy viewer,
source maps, the service worker (it loads Workbox from a CDN; ``init-service-worker.js`` becomes a
script that unregisters any service worker) and the demo's ``app-config.js``: the server writes its
own at ``/ohif/app-config.js`` (``labelloop.api.ohif``). Nothing is fetched at run time.

Building OHIF from source is not possible here (the registry lacks versions its workspace needs),
which is why the prebuilt ``dist/`` is used. The install is skipped when ``OUT`` already holds the
pinned version; it writes into a temporary folder first, so an interrupted install leaves nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
BASE = "/ohif/"
DIST = PurePosixPath("package/dist")
#: Top-level entries of ``dist/`` that are not installed (see the module's docstring).
LEFT_OUT = frozenset(
    {"ort", "dicom-microscopy-viewer", "sw.js", "app-config.js", "_headers", "_redirects", "serve.json"}
)
STAMP = ".labelloop-ohif.json"
#: What replaces ``init-service-worker.js``: no service worker, and none left from an earlier visit.
NO_SERVICE_WORKER = """// labelloop: no service worker (OHIF's loads Workbox from a CDN); remove any registered before.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.getRegistrations().then(function (registrations) {
    for (const registration of registrations) registration.unregister();
  });
}
"""
_PUBLIC_PATH = re.compile(rb'__webpack_require__\.p = "/";')


def _pack(spec: str, into: Path) -> Path:
    """``npm pack spec`` into ``into``: the tarball's path."""
    answer = subprocess.run(
        ["npm", "pack", spec, "--silent", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
    )
    name = answer.stdout.strip().splitlines()[-1]
    return into / name


def _check_integrity(tarball: Path, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise SystemExit(f"ohif.json: integrity must be sha512-..., not {integrity!r}")
    digest = hashlib.sha512()
    with open(tarball, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if base64.b64encode(digest.digest()).decode() != expected:
        raise SystemExit(f"{tarball.name}: its SHA-512 is not the one pinned in ohif.json")


def _unpack(tarball: Path, out: Path) -> None:
    """The kept files of ``package/dist/`` into ``out``; any member outside it is refused."""
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive.getmembers():
            path = PurePosixPath(member.name)
            if ".." in path.parts or path.is_absolute():
                raise SystemExit(f"{tarball.name}: unsafe member {member.name!r}")
            if not member.isfile() or DIST not in path.parents:
                continue
            relative = path.relative_to(DIST)
            if relative.parts[0] in LEFT_OUT or relative.suffix == ".map":
                continue
            target = out.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            with source, open(target, "wb") as f:
                shutil.copyfileobj(source, f)


def _rewrite(path: Path, pattern: str | re.Pattern[bytes], replacement: bytes, at_least: int = 1) -> int:
    data = path.read_bytes()
    if isinstance(pattern, str):
        count = data.count(pattern.encode())
        data = data.replace(pattern.encode(), replacement)
    else:
        data, count = pattern.subn(replacement, data)
    if count < at_least:
        raise SystemExit(f"{path.name}: expected {pattern!r} at least {at_least} time(s), found {count}")
    path.write_bytes(data)
    return count


def _rebase(out: Path, public_paths: int) -> None:
    """Rewrite the site's absolute ``/`` paths to ``BASE``; fail if the layout is not the known one."""
    base = BASE.encode()
    index = out / "index.html"
    _rewrite(index, 'window.PUBLIC_URL="/"', b'window.PUBLIC_URL="' + base + b'"', at_least=2)
    for attribute in ("href", "src", "content"):
        _rewrite(index, f'{attribute}="/', f'{attribute}="'.encode() + base, at_least=1)
    rewritten = sum(
        _rewrite(bundle, _PUBLIC_PATH, b'__webpack_require__.p = "' + base + b'";', at_least=0)
        for bundle in out.glob("*.js")
    )
    if rewritten != public_paths:
        raise SystemExit(f"expected webpack's public path in {public_paths} bundles, found {rewritten}")
    for sheet in out.glob("*.css"):
        _rewrite(sheet, "url(/", b"url(" + base, at_least=0)
    _rewrite(out / "manifest.json", '"/assets/', b'"' + base + b"assets/")
    _rewrite(out / "assets" / "browserconfig.xml", '"/assets/', b'"' + base + b"assets/")
    (out / "init-service-worker.js").write_text(NO_SERVICE_WORKER, encoding="utf-8")


def install(out: Path) -> bool:
    """Install the pinned OHIF into ``out``; False when it is there already."""
    pin = json.loads((HERE / "ohif.json").read_text(encoding="utf-8"))
    stamp = out / STAMP
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == pin:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".ohif-") as work:
        scratch = Path(work)
        tarball = _pack(f"{pin['package']}@{pin['version']}", scratch)
        _check_integrity(tarball, pin["integrity"])
        site = scratch / "site"
        site.mkdir()
        _unpack(tarball, site)
        _rebase(site, pin["webpack_public_paths"])
        (site / STAMP).write_text(json.dumps(pin, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        site.rename(out)
    return True


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: install.py OUT")
    target = Path(sys.argv[1])
    done = install(target)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"OHIF {'installed' if done else 'already installed'} in {target} ({size / 2**20:.0f} MiB)")
