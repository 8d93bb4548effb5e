"""Hostile or broken download servers: every size and duration is bounded. A mirror without
Content-Length is read only up to the archive's known size; a trickling server is given up
(minimum throughput); an invalid Content-Length names the URL (kpfast.data.download)."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kpfast.data import download as dl
from kpfast.data.download import Archive, DownloadError

ARCHIVE = Archive("zips/thing.zip", 10_000, "0" * 32)


@pytest.fixture
def server():
    behaviour = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):
            kind = behaviour["kind"]
            self.send_response(200)
            if kind == "bad_length":
                self.send_header("Content-Length", "lots")
            self.end_headers()
            try:
                if kind == "endless":
                    block = b"\0" * 4096
                    for _ in range(10_000):  # 40 MB at most, far more than the 10 kB archive
                        self.wfile.write(block)
                elif kind == "trickle":
                    for _ in range(200):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield behaviour, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_a_mirror_without_content_length_is_read_only_to_the_archive_size(server, tmp_path):
    behaviour, url = server
    behaviour["kind"] = "endless"
    with pytest.raises(DownloadError, match=r"more than the archive's 10000 bytes.*thing\.zip\.part"):
        dl.fetch(ARCHIVE, url, tmp_path, retries=0, progress=False, timeout=10)
    assert not (tmp_path / "thing.zip.part").exists()


def test_a_trickling_server_is_given_up(server, tmp_path, monkeypatch):
    behaviour, url = server
    behaviour["kind"] = "trickle"
    monkeypatch.setattr(dl, "STALL_SECONDS", 1.0)
    monkeypatch.setattr(dl, "MIN_THROUGHPUT", 1000)
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"B/s.*rerun the same command to resume"):
        dl.fetch(ARCHIVE, url, tmp_path, retries=1, progress=False, timeout=10)
    assert time.monotonic() - start < 8


def test_an_invalid_content_length_names_the_url(server, tmp_path):
    behaviour, url = server
    behaviour["kind"] = "bad_length"
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1.*invalid Content-Length 'lots'"):
        dl.fetch(ARCHIVE, url, tmp_path, retries=0, progress=False, timeout=10)
