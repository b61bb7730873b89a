"""The nginx sample (deploy/nginx/teleconsult.conf) made runnable in a test: free loopback
ports, a throw-away certificate, every path inside a temporary prefix."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "nginx" / "teleconsult.conf"
DOMAIN = "consult.test"


def free_port_pair() -> int:
    """A port P with P and P + 1 both free on 127.0.0.1 (worker 0 and worker 1)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


def self_signed(prefix: Path) -> tuple[Path, Path]:
    """A certificate for the test domain and its worker names (openssl)."""
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={DOMAIN}",
            "-addext",
            f"subjectAltName=DNS:{DOMAIN},DNS:*.{DOMAIN}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def site_config(worker_port: int, https_port: int, http_port: int, cert: Path, key: Path) -> str:
    """The sample with test ports, names and certificate; nothing else changed."""
    text = SAMPLE.read_text()
    text = text.replace("127.0.0.1:8081", f"127.0.0.1:{worker_port + 1}")
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{worker_port}")
    text = text.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = "\n".join(line for line in text.splitlines() if "listen [::]" not in line)
    text = text.replace("/etc/teleconsult/tls/fullchain.pem", str(cert))
    text = text.replace("/etc/teleconsult/tls/privkey.pem", str(key))
    return text.replace("consult.hospital.example", DOMAIN)


def main_config(prefix: Path, site: Path) -> Path:
    """An nginx.conf (foreground, one process, logs and temp files under `prefix`)."""
    conf = prefix / "nginx.conf"
    temp = "\n".join(
        f"    {name}_temp_path {prefix / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"daemon off;\nmaster_process off;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {prefix / 'access.log'};\n{temp}\n"
        f"    include {site};\n"
        "}\n"
    )
    return conf


def nginx() -> str | None:
    """Debian's nginx binary, if installed."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
