"""Benchmarks: asyncmpm side by side with Apache httpd + mod_wsgi, gunicorn, waitress, uvicorn.

`python -m benchmarks --help`; the method and the goals are in benchmarks/README.md.
"""
