"""The APNs servers the push and fan-out benches push to, and the PKI they share.

nginx (HTTP/2 + TLS + client-certificate check, ``return 200`` with the ``apns-id`` echoed) when
:data:`NGINX` exists, because the Python stand-in tops out near 3,500 requests/s here and would
measure itself rather than the product; otherwise the stand-in, and the bench says so
(:func:`standin_note`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from rollout.bench.processes import free_port, stop_processes, wait_port
from rollout.sim.pki import Issued, issue_leaf, make_ca

NGINX = "/usr/sbin/nginx"
TOPIC = "com.apple.mgmt.External.b3c1e0c4-0000-4000-8000-00000000be7c"

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {access_log}
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {dir}/server.crt;
        ssl_certificate_key {dir}/server.key;
        ssl_client_certificate {dir}/client-ca.pem;
        ssl_verify_client on;
        http2_max_concurrent_streams 1000;
        location /3/device/ {{
            add_header apns-id $http_apns_id always;
            return 200;
        }}
    }}
}}
"""


def standin_note(bench: str, nginx: str = NGINX) -> str:
    """The one line a bench prints when it pushes to the Python stand-in instead of nginx."""
    return (
        f"nginx not found at {nginx}: pushing to the Python APNs stand-in instead, so these "
        "figures measure the stand-in, not the product; install nginx-light "
        f"(deploy/dev.sh bench {bench} does, as root)"
    )


@dataclass(frozen=True)
class Pki:
    """A CA, the push client's certificate (topic in its UID) and nginx's server certificate,
    written as files into ``dir``."""

    ca: Issued
    client: Issued
    dir: Path

    @property
    def ca_file(self) -> str:
        """The CA the clients trust the server with."""
        return str(self.dir / "ca.pem")

    @property
    def client_pem(self) -> str:
        """The push certificate and its key, in one PEM file."""
        return str(self.dir / "client.pem")


def make_pki(workdir: Path) -> Pki:
    """Issue the bench's certificates and write them into ``workdir``."""
    ca = make_ca("Rollout bench CA")
    client = issue_leaf(ca, "APSP:bench", client_auth=True, UID=TOPIC)
    server = issue_leaf(
        ca, "localhost", server_auth=True, dns_names=("localhost",), ip_addresses=("127.0.0.1",)
    )
    (workdir / "ca.pem").write_bytes(ca.cert_pem())
    (workdir / "client-ca.pem").write_bytes(ca.cert_pem())
    (workdir / "client.pem").write_bytes(client.cert_pem() + client.key_pem())
    (workdir / "server.crt").write_bytes(server.cert_pem())
    (workdir / "server.key").write_bytes(server.key_pem())
    return Pki(ca=ca, client=client, dir=workdir)


@contextlib.contextmanager
def nginx(pki: Pki, access_log: str = "access_log off;") -> Iterator[int]:
    """nginx as an APNs endpoint on a free port (yielded), its files in ``pki.dir``."""
    port = free_port()
    conf = pki.dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=pki.dir, port=port, access_log=access_log))
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(pki.dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port, proc, name="nginx")
        yield port
    finally:
        stop_processes([proc])


def _standin_main(ca_cert: bytes, ca_key: bytes, port: int, stop: Any) -> None:
    from rollout.sim.apns_server import ApnsStandIn

    key = serialization.load_pem_private_key(ca_key, None)
    ca = Issued(cert=x509.load_pem_x509_certificate(ca_cert), key=key)  # type: ignore[arg-type]
    with ApnsStandIn(port=port, server_ca=ca, client_ca=ca):
        stop.wait()


@contextlib.contextmanager
def standin_process(pki: Pki) -> Iterator[int]:
    """The Python APNs stand-in in a child process (so it has a core of its own), its port."""
    port = free_port()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(
        target=_standin_main,
        args=(pki.ca.cert_pem(), pki.ca.key_pem(), port, stop),
        daemon=True,
    )
    proc.start()
    try:
        wait_port(port)
        yield port
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
