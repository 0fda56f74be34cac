"""A real Orthanc PACS with the DICOMweb plugin for the tests, started from Debian's binaries.

Orthanc 1.10 has no bind-address setting: its HTTP server listens on every address of the
machine, and ``"RemoteAccessAllowed": false`` makes it refuse (401) every client that is not
on the loopback interface. Its DICOM (DIMSE) server is disabled: the tests speak DICOMweb
(STOW-RS, QIDO-RS, WADO-RS) and Orthanc's REST API only.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from tests.support.servers import free_port

__all__ = ["OrthancServer", "find_orthanc", "find_dicomweb_plugin", "start_orthanc"]

_INSTALL_HINT = "`make test-deps` installs Debian's orthanc and orthanc-dicomweb packages"
_ORTHANC_PATHS = (
    "/usr/sbin/Orthanc",
    "/usr/bin/Orthanc",
    "/usr/local/sbin/Orthanc",
    "/usr/local/bin/Orthanc",
)
_PLUGIN_PATHS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


def find_orthanc() -> str:
    """The Orthanc executable (``/usr/sbin/Orthanc`` on Debian, which is not on a user's PATH)."""
    found = shutil.which("Orthanc") or next((p for p in _ORTHANC_PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError(f"Orthanc is not installed; {_INSTALL_HINT}")
    return found


def find_dicomweb_plugin() -> str:
    """The DICOMweb plugin's shared library, as ``dpkg -L orthanc-dicomweb`` lists it."""
    try:
        listed = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], check=True, capture_output=True, text=True, timeout=30
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        listed = []
    candidates = [p for p in listed if Path(p).name.startswith("libOrthancDicomWeb.so")] + list(_PLUGIN_PATHS)
    # The unversioned name (a link in Orthanc's plugin folder) first, then the versioned file.
    candidates.sort(key=lambda p: (not p.endswith(".so"), p not in _PLUGIN_PATHS))
    for path in candidates:
        if Path(path).is_file():
            return path
    raise RuntimeError(f"Orthanc's DICOMweb plugin is not installed; {_INSTALL_HINT}")


@dataclass
class OrthancServer:
    """A running Orthanc: base URL, its temp folder, and the HTTP users when auth is on.

    Attributes:
        url: ``http://127.0.0.1:PORT`` (Orthanc's REST API).
        dicomweb: ``url + "/dicom-web"`` (the DICOMweb root, for ``DICOMwebClient(url=...)``).
        users: username -> password; empty when authentication is off.
        base: the temp folder with ``orthanc.json``, ``storage/`` and ``orthanc.log``.
        startup_s: seconds from the process start until ``GET /system`` answered.
    """

    url: str
    port: int
    base: Path
    users: dict[str, str] = field(default_factory=dict)
    startup_s: float = 0.0

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def credentials(self) -> tuple[str, str] | None:
        """The first user's ``(username, password)``, or ``None`` when authentication is off."""
        return next(iter(self.users.items()), None)

    @property
    def log(self) -> Path:
        return self.base / "orthanc.log"

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of Orthanc's log (stdout and stderr)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def session(self, auth: bool = True) -> requests.Session:
        """A ``requests`` session, sending the first user's credentials when ``auth`` and auth is on."""
        session = requests.Session()
        if auth and self.credentials is not None:
            session.auth = self.credentials
        return session

    def client(self, auth: bool = True) -> DICOMwebClient:
        """A dicomweb-client for ``dicomweb`` (with the credentials when ``auth``)."""
        return DICOMwebClient(url=self.dicomweb, session=self.session(auth))

    def store(self, datasets: Sequence[Dataset]) -> Dataset:
        """STOW-RS ``datasets`` (of any studies) to ``/studies``; returns the STOW response dataset.

        A dataset without a 128-byte preamble is sent as a shallow copy with one: dicomweb-client
        encodes with pydicom 3's ``dcmwrite``, which otherwise leaves out the ``DICM`` prefix;
        Orthanc stores the bytes as they come, and pydicom cannot read them back from WADO-RS.

        Raises:
            RuntimeError: Orthanc refused or failed some instance (``FailedSOPSequence``).
        """
        encoded = [ds if ds.preamble is not None else _with_preamble(ds) for ds in datasets]
        with self.session() as session:
            response = DICOMwebClient(url=self.dicomweb, session=session).store_instances(encoded)
        failed = response.get("FailedSOPSequence")
        if failed:
            raise RuntimeError(f"Orthanc refused {len(failed)} of {len(datasets)} instances: {failed}")
        return response

    def rest(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request to Orthanc's REST API (``path`` starts with ``/``), raising for errors."""
        with self.session() as session:
            response = session.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def clear(self) -> None:
        """Delete every patient (and so every study, series and instance), for test isolation."""
        for patient in self.rest("GET", "/patients").json():
            self.rest("DELETE", f"/patients/{patient}")

    def statistics(self) -> dict[str, Any]:
        """``GET /statistics``: counts of patients, studies, series and instances, disk size."""
        stats: dict[str, Any] = self.rest("GET", "/statistics").json()
        return stats


def _with_preamble(ds: Dataset) -> Dataset:
    framed = copy.copy(ds)
    framed.preamble = b"\0" * 128
    return framed


def _config(
    base: Path, port: int, plugin: str, users: Mapping[str, str], stable_age: int, lua: Sequence[Path] = ()
) -> dict[str, Any]:
    storage = base / "storage"
    return {
        "Name": "labelloop-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": port,
        # Orthanc 1.10 cannot bind to one address; this refuses every non-loopback client.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": dict(users),
        "DicomServerEnabled": False,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": stable_age,
        "SaveJobs": False,
        "SyncStorageArea": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "HttpThreadsCount": 8,
        "LuaScripts": [str(path) for path in lua],
    }


def start_orthanc(
    users: Mapping[str, str] | None = None,
    *,
    stable_age: int = 1,
    timeout: float = 30.0,
    lua: str | None = None,
) -> tuple[OrthancServer, Callable[[], None]]:
    """Start Orthanc with DICOMweb on a free port; returns the server and its ``stop``.

    Args:
        users: HTTP basic-auth users (username -> password); none turns authentication off.
        stable_age: seconds without new instances before Orthanc calls a series stable.
        timeout: seconds to wait for ``GET /system`` to answer.
        lua: a Lua script Orthanc runs (its callbacks, e.g. ``ReceivedInstanceFilter``); the
            placeholder ``{base}`` is replaced by Orthanc's temp folder.

    ``stop()`` kills Orthanc and deletes its temp folder (index and storage with it).

    Raises:
        RuntimeError: Orthanc or its DICOMweb plugin is not installed, or Orthanc exited early.
        TimeoutError: it did not answer within ``timeout`` (the message holds its log's tail).
    """
    executable = find_orthanc()
    plugin = find_dicomweb_plugin()
    # Not under pytest's tmp dirs, which are private to their owner, in case Orthanc runs as
    # another user some day; as root (here) or the same user either place works.
    base = Path(tempfile.mkdtemp(prefix="labelloop-orthanc-"))
    port = free_port()
    server = OrthancServer(url=f"http://127.0.0.1:{port}", port=port, base=base, users=dict(users or {}))
    config = base / "orthanc.json"
    scripts = []
    if lua is not None:
        script = base / "hooks.lua"
        script.write_text(lua.replace("{base}", str(base)))
        scripts.append(script)
    config.write_text(json.dumps(_config(base, port, plugin, server.users, stable_age, scripts), indent=2))
    log = open(server.log, "wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [executable, str(config)], cwd=base, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()

    def stop() -> None:
        # SIGKILL, not SIGTERM: a graceful stop takes Orthanc 1.10 2-5 s (its HTTP server alone
        # needs 1.5 s to stop), and its index and storage are deleted right after anyway.
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)

    deadline = started + timeout
    with server.session() as session:
        while True:
            if process.poll() is not None:
                tail = server.log_tail()
                stop()
                raise RuntimeError(f"Orthanc exited with {process.returncode} before answering:\n{tail}")
            try:
                if session.get(f"{server.url}/system", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                tail = server.log_tail()
                stop()
                raise TimeoutError(f"Orthanc did not answer on port {port} within {timeout} s:\n{tail}")
            time.sleep(0.02)
    server.startup_s = time.monotonic() - started
    return server, stop
