"""A throwaway self-signed certificate for the TLS workload, made in the run's temp directory.

openssl's CLI first (Apache's own dependency, and OpenSSL 3 writes the PKCS#8 key granian
insists on), else trustme (its key re-written as PKCS#8). Both name 127.0.0.1 in
subjectAltName; wrk does not verify certificates anyway.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    made_by: str


def available() -> str | None:
    """Why no certificate can be made here, or None."""
    if shutil.which("openssl") or importlib.util.find_spec("trustme"):
        return None
    return "neither the openssl CLI nor the trustme package is installed"


def make_cert(directory: Path) -> TlsFiles:
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl:
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-addext", "basicConstraints=critical,CA:FALSE",
                        "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=30)
        return TlsFiles(cert, key, "openssl req -x509 -newkey ec (P-256)")
    import trustme
    from cryptography.hazmat.primitives import serialization

    leaf = trustme.CA().issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    private = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return TlsFiles(cert, key, "trustme (ECDSA P-256)")


def client_context() -> ssl.SSLContext:
    """A context that accepts the self-signed certificate (as wrk does)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def negotiated(host: str, port: int, timeout: float = 5.0) -> str:
    """Protocol and cipher a default Python client gets, e.g. 'TLSv1.3 TLS_AES_256_GCM_SHA384'."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                client_context().wrap_socket(raw, server_hostname=host) as sock:
            cipher = sock.cipher()
            return f"{sock.version()} {cipher[0] if cipher else '?'}"
    except OSError as exc:
        return f"? ({exc})"
