"""download_data.py against a local HTTP server on 127.0.0.1: success, resume, md5 mismatch."""
import hashlib
import http.server
import io
import os
import threading
import zipfile

import pytest

import config
import download_data
import utils

AUDIO = 'development_audio/cafe_restaurant/cafe_restaurant_07.wav'
LABELS = 'development_annotation/soft_labels_cafe_restaurant/cafe_restaurant_07.txt'


def make_zip(files):
    """Bytes of a zip archive holding {name: bytes} (stored: the size stays that of the content)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


CONTENT = {AUDIO: os.urandom(200_000), LABELS: b'12.0\t13.0\tpeople talking\t0.8\n'}
AUDIO_ZIP = make_zip({AUDIO: CONTENT[AUDIO]})
LABELS_ZIP = make_zip({LABELS: CONTENT[LABELS]})


def md5(data):
    return hashlib.md5(data).hexdigest()


ARCHIVES = {'development_audio.zip': ('7244360', md5(AUDIO_ZIP)),
            'development_annotation.zip': ('7244360', md5(LABELS_ZIP))}


class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves {path: bytes}; honours `Range: bytes=N-` unless told not to; logs (path, Range header, status)."""

    def __init__(self, files, honour_range=True, cut_after=None):
        super().__init__(('127.0.0.1', 0), RangeHandler)
        self.files, self.honour_range, self.cut_after, self.log = files, honour_range, cut_after, []

    @property
    def url(self):
        return f'http://127.0.0.1:{self.server_address[1]}'


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split('?')[0]
        data = self.server.files.get(path)
        if data is None:
            return self.reply(404, b'')
        requested = self.headers.get('Range')
        if requested and self.server.honour_range:
            start = int(requested.removeprefix('bytes=').rstrip('-'))
            if start >= len(data):
                return self.reply(416, b'', requested)
            return self.reply(206, data[start:], requested,
                              {'Content-Range': f'bytes {start}-{len(data) - 1}/{len(data)}'})
        self.reply(200, data, requested)

    def reply(self, status, body, requested=None, headers=()):
        self.server.log.append((self.path, requested, status))
        self.send_response(status)
        for key, value in dict(headers, **{'Content-Length': str(len(body))}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.server.cut_after is not None:          # announce the whole body, send part, hang up
            body, self.close_connection = body[:self.server.cut_after], True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve(monkeypatch):
    """serve(files, honour_range=True, cut_after=None) -> a running server; all shut down after the test."""
    for variable in ('http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv('no_proxy', '127.0.0.1')              # never leave this machine
    servers = []

    def start(files, honour_range=True, cut_after=None):
        server = ArchiveServer(files, honour_range, cut_after)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def served(archives=None):
    return {f'/files/{name}': data for name, data in (archives or
            {'development_audio.zip': AUDIO_ZIP, 'development_annotation.zip': LABELS_ZIP}).items()}


def test_download_verifies_and_unpacks_into_the_data_root(serve, tmp_path):
    server = serve(served())
    got = download_data.download_archives(ARCHIVES, tmp_path, server.url + '/files/', progress=False)
    assert got == list(ARCHIVES)
    for name, content in CONTENT.items():
        assert (tmp_path / name).read_bytes() == content
    assert not (tmp_path / 'development_audio.zip').exists()                       # deleted once unpacked
    # a second run finds the archives done and asks the server nothing
    requests = len(server.log)
    assert download_data.download_archives(ARCHIVES, tmp_path, server.url + '/files/', progress=False) == []
    assert len(server.log) == requests


def test_url_base_may_be_a_format_string_with_record_and_name(serve, tmp_path):
    server = serve({'/records/7244360/development_audio.zip': AUDIO_ZIP})
    archives = {'development_audio.zip': ARCHIVES['development_audio.zip']}
    download_data.download_archives(archives, tmp_path, server.url + '/records/{record}/{name}', progress=False)
    assert (tmp_path / AUDIO).read_bytes() == CONTENT[AUDIO]


def test_a_cut_download_is_resumed_with_a_range_request(serve, tmp_path):
    server = serve(served())
    half = len(AUDIO_ZIP) // 2
    (tmp_path / 'development_audio.zip.part').write_bytes(AUDIO_ZIP[:half])
    download_data.download_archives(ARCHIVES, tmp_path, server.url + '/files/', progress=False)
    assert ('/files/development_audio.zip', f'bytes={half}-', 206) in server.log
    assert (tmp_path / AUDIO).read_bytes() == CONTENT[AUDIO]                       # md5 verified, unpacked
    assert not (tmp_path / 'development_audio.zip.part').exists()


def test_a_connection_lost_midway_is_an_error_and_the_next_run_resumes(serve, tmp_path):
    cutting = serve(served(), cut_after=50_000)
    with pytest.raises(utils.DataError, match='run again to resume'):
        download_data.download_archives(ARCHIVES, tmp_path, cutting.url + '/files/', progress=False)
    assert (tmp_path / 'development_audio.zip.part').read_bytes() == AUDIO_ZIP[:50_000]
    server = serve(served())
    download_data.download_archives(ARCHIVES, tmp_path, server.url + '/files/', progress=False)
    assert ('/files/development_audio.zip', 'bytes=50000-', 206) in server.log
    assert (tmp_path / AUDIO).read_bytes() == CONTENT[AUDIO]


def test_a_server_that_ignores_range_makes_the_download_start_over(serve, tmp_path):
    server = serve(served(), honour_range=False)
    (tmp_path / 'development_audio.zip.part').write_bytes(b'x' * 1000)            # would corrupt an append
    download_data.download_archives(ARCHIVES, tmp_path, server.url + '/files/', progress=False)
    assert ('/files/development_audio.zip', 'bytes=1000-', 200) in server.log
    assert (tmp_path / AUDIO).read_bytes() == CONTENT[AUDIO]


def test_md5_mismatch_is_an_error_nothing_is_unpacked_and_the_file_is_kept(serve, tmp_path):
    server = serve(served())
    archives = {'development_audio.zip': ('7244360', '0' * 32)}
    with pytest.raises(utils.DataError) as error:
        download_data.download_archives(archives, tmp_path, server.url + '/files/', progress=False)
    message = str(error.value)
    assert 'development_audio.zip' in message and '0' * 32 in message and md5(AUDIO_ZIP) in message
    assert not (tmp_path / 'development_audio').exists()
    assert (tmp_path / 'development_audio.zip.bad').read_bytes() == AUDIO_ZIP
    assert not (tmp_path / '.development_audio.zip.done').exists()


def test_cli_exits_nonzero_on_md5_mismatch(serve, tmp_path, capsys):
    # the CLI checks against the real md5s of config.py, which our small archives cannot match
    server = serve(served())
    assert download_data.main(['--data-root', str(tmp_path), '--url-base', server.url + '/files/']) == 2
    expected_md5 = config.DEVELOPMENT_ARCHIVES['development_audio.zip'][1]
    assert expected_md5 in capsys.readouterr().err
    assert not (tmp_path / 'development_audio').exists()


def test_a_wrapper_folder_above_the_data_folders_is_dropped(serve, tmp_path):
    wrapped = make_zip({f'MAESTRO_Real/{AUDIO}': CONTENT[AUDIO], '__MACOSX/._x': b'junk'})
    server = serve({'/files/development_audio.zip': wrapped})
    archives = {'development_audio.zip': ('7244360', md5(wrapped))}
    download_data.download_archives(archives, tmp_path, server.url + '/files/', progress=False)
    assert (tmp_path / AUDIO).read_bytes() == CONTENT[AUDIO]
    assert not (tmp_path / 'MAESTRO_Real').exists() and not (tmp_path / '__MACOSX').exists()
