"""A local S3-compatible server for the archive's S3 tests: moto's server, single-threaded, because threaded moto
does not make conditional puts atomic (two writers could both create the same Delta commit; see TOOLCHAIN.md).
Usage: s3_server.py <port>"""
import sys

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

run_simple(
    "127.0.0.1",
    int(sys.argv[1]),
    DomainDispatcherApplication(create_backend_app),
    threaded=False,
    use_reloader=False,
)
