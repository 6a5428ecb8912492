"""The version, and the Server header every process role sends."""

VERSION = "0.1.0"
SERVER_HEADER = f"asyncmpm/{VERSION}"
