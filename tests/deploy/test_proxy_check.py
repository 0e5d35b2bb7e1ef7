"""``rollout check --mdm-url``: the shipped nginx configuration in front of a real web app, as
a device reaches it: the probe through the proxy sees the device's certificate forwarded and a
forged header dropped; a proxy that passes the client's header on, or never asks for the
certificate, fails the check, naming what is wrong."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rollout.bench.processes import wait_port
from rollout.clock import ManualClock
from rollout.config import Settings
from rollout.ledger import Ledger, db
from rollout.proxy_check import ProxyTarget, check_proxy
from rollout.sim.identity import issue_device_identity, make_device_ca
from rollout.sim.pki import Issued, issue_leaf, make_ca
from rollout.web.app import create_app
from rollout.web.server import BackgroundServer, free_port
from tests.cli.support import rollout

REPO = Path(__file__).resolve().parents[2]
SNIPPET = REPO / "deploy" / "nginx" / "rollout-mdm.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
UDID = "00008030-000A1B2C3D4E5F60"


@dataclass
class Site:
    web: BackgroundServer
    files: Path
    device: Issued

    def target(self, port: int, *, with_device: bool = True) -> ProxyTarget:
        return ProxyTarget(
            f"https://127.0.0.1:{port}",
            self.files / "server-ca.pem",
            self.files / "device.pem" if with_device else None,
            self.files / "device.key" if with_device else None,
        )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    files = tmp_path / "files"
    files.mkdir()
    device_ca = make_device_ca()
    device = issue_device_identity(device_ca, UDID)
    server_ca = make_ca("Rollout Test TLS CA")
    server = issue_leaf(server_ca, "localhost", server_auth=True, ip_addresses=("127.0.0.1",))
    for name, data in {
        "device-ca.pem": device_ca.cert_pem(),
        "device.pem": device.cert_pem(),
        "device.key": device.key_pem(),
        "server-ca.pem": server_ca.cert_pem(),
        "fullchain.pem": server.cert_pem(),
        "privkey.pem": server.key_pem(),
    }.items():
        (files / name).write_bytes(data)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    db.upgrade(url)
    ledger = Ledger.open(url)
    settings = Settings(
        home=tmp_path,
        database_url=url,
        device_ca=str(files / "device-ca.pem"),
        identity_sources="client-cert",
        identity_mode="strict",
    )
    web = BackgroundServer(create_app(settings, ledger)).start()
    try:
        yield Site(web, files, device)
    finally:
        web.stop()
        ledger.dispose()


def _conf(site: Site, port: int, *, verify_client: bool, set_header: bool) -> str:
    """deploy/nginx/rollout-mdm.conf, pointed at the test's files and ports."""
    text = SNIPPET.read_text()
    web_port = site.web.base_url.rsplit(":", 1)[1]
    text = text.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{web_port};")
    text = re.sub(r"listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;", text)
    text = text.replace("/etc/rollout/tls/", f"{site.files}/")
    text = text.replace("/etc/rollout/device-ca.pem", f"{site.files}/device-ca.pem")
    if verify_client:
        text = text.replace("# ssl_client_certificate", "ssl_client_certificate")
        text = text.replace("# ssl_verify_client", "ssl_verify_client")
    if not set_header:  # a proxy that passes the client's own header on
        text = text.replace("proxy_set_header Client-Cert $ssl_client_escaped_cert;", "")
    run = site.files / f"nginx-{port}"
    run.mkdir()
    temp = "\n".join(
        f"    {kind}_temp_path {run}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                          "uwsgi", "scgi")
    )  # fmt: skip
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\ndaemon off;\npid {run}/nginx.pid;\n"
        f"error_log {run}/error.log warn;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    access_log off;\n{temp}\n{text}\n}}\n"
    )


@pytest.fixture
def proxy(site: Site) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*, verify_client: bool = True, set_header: bool = True) -> int:
        port = free_port()
        conf = site.files / f"nginx-{port}.conf"
        conf.write_text(_conf(site, port, verify_client=verify_client, set_header=set_header))
        proc = subprocess.Popen(
            [NGINX, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        started.append(proc)
        wait_port(port, proc, name="nginx")
        return port

    try:
        yield start
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(timeout=10)


def test_the_shipped_nginx_config_forwards_the_certificate_and_drops_a_forged_one(
    site: Site, proxy: object, tmp_path: Path
) -> None:
    port = proxy()  # type: ignore[operator]
    got = check_proxy(site.target(port), ManualClock())
    assert got.status == "ok", got
    assert f"CN={UDID}" in got.detail and "drops a forged one" in got.detail
    without = check_proxy(site.target(port, with_device=False), ManualClock())
    assert without.status == "warn" and "give --client-cert" in without.detail, without

    # the same through the command, beside the other checks
    res = rollout(
        "check", "--json", "--mdm-url", f"https://127.0.0.1:{port}",
        "--mdm-ca", str(site.files / "server-ca.pem"),
        "--client-cert", str(site.files / "device.pem"),
        "--client-key", str(site.files / "device.key"),
        home=tmp_path / "check", env={"ROLLOUT_BROKER_URL": "filesystem://"},
    )  # fmt: skip
    rows = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert list(rows)[-1] == "proxy" and rows["proxy"]["status"] == "ok", rows


def test_a_proxy_passing_the_clients_own_header_on_fails(site: Site, proxy: object) -> None:
    port = proxy(set_header=False)  # type: ignore[operator]
    got = check_proxy(site.target(port), ManualClock())
    assert got.status == "fail" and "passes on a Client-Cert header the client sent" in got.detail


def test_a_proxy_that_never_asks_for_the_certificate_fails(site: Site, proxy: object) -> None:
    port = proxy(verify_client=False)  # type: ignore[operator]
    got = check_proxy(site.target(port), ManualClock())
    assert got.status == "fail" and "did not reach rollout (Client-Cert empty)" in got.detail


def test_what_answers_must_be_rollout(site: Site) -> None:
    # no proxy at all: a plain HTTP server where TLS is expected, then a wrong path
    got = check_proxy(ProxyTarget(site.web.base_url.replace("http:", "https:")), ManualClock())
    assert got.status == "fail" and "cannot reach" in got.detail
    probe = httpx.get(site.web.base_url + "/mdm/identity-probe", timeout=10).json()
    assert probe == {
        "service": "rollout-mdm",
        "sources": ["client-cert"],
        "cert_header": "Client-Cert",
        "client_cert": None,
    }
