"""The server's TLS context: modern defaults, ALPN, optional client certificates."""

from __future__ import annotations

import ssl

from asyncmpm.config.model import Config
from asyncmpm.errors import ConfigError

__all__ = ["make_ssl_context"]


def make_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The context every TLS listener shares, or None without a certificate.

    TLS 1.2 is the floor (RFC 9113 9.2 requires it for h2, and older versions are broken);
    Python's default server ciphers are already AEAD with forward secrecy. ALPN offers ``h2``
    first, so browsers and httpx pick HTTP/2, then ``http/1.1``.
    """
    if not config.certfile:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("SSLCertificateFile",
                          f"cannot load {config.certfile} (key: {config.keyfile or 'in it'}): "
                          f"{exc}") from None
    if config.ca_certs:
        try:
            context.load_verify_locations(cafile=config.ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("SSLCACertificateFile",
                              f"cannot load {config.ca_certs}: {exc}") from None
        context.verify_mode = (ssl.CERT_REQUIRED if config.verify_client == "require"
                               else ssl.CERT_OPTIONAL)
    context.set_alpn_protocols(["h2", "http/1.1"] if config.http2 else ["http/1.1"])
    return context
