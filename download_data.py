"""Download MAESTRO Real from Zenodo: development audio and soft labels, optionally the evaluation audio.

    python download_data.py                                  # development set into data/MAESTRO_Real
    python download_data.py --data-root /data/maestro --evaluation
    python download_data.py --url-base http://127.0.0.1:8000/    # a mirror serving <url-base><archive name>

Then: python extract_features.py --data-root data/MAESTRO_Real

A cut download resumes on the next run; an archive is unpacked only once its md5 is checked, and one unpacked is
skipped on later runs (docs/method.md, Data).
"""
import argparse
import hashlib
import http.client
import shlex
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

import config
import experiment
import utils

CHUNK = 1 << 20           # bytes per read and write
TIMEOUT = 60              # s without data before a download is abandoned (run again to resume)


def fetch(url, part, progress=True):
    """Download `url` into `part`, appending to what a cut download left there (HTTP Range)."""
    start = part.stat().st_size if part.exists() else 0
    headers = {'Range': f'bytes={start}-'} if start else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:
            return                         # nothing past the end of the .part: it is complete (md5 will tell)
        raise utils.DataError(f'{url}: HTTP {error.code} {error.reason}') from None
    except urllib.error.URLError as error:
        raise utils.DataError(f'{url}: cannot connect ({error.reason}); check the network and run again') from None
    with response:
        if start and response.status != 206:
            start = 0                      # the server ignored Range and sends the whole file: start over
        length = response.headers.get('Content-Length')
        total = start + int(length) if length is not None else None
        try:
            with open(part, 'ab' if start else 'wb') as out, \
                    tqdm(total=total, initial=start, unit='B', unit_scale=True, unit_divisor=1024,
                         desc=part.name[:-len('.part')], disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as error:   # connection lost, timeout
            raise utils.DataError(f'{url}: the download was cut ({error!r}) after {part.stat().st_size} bytes, '
                                  f'kept in {part}; run again to resume') from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise utils.DataError(f'{url}: the download stopped at {size} of {total} bytes (kept in {part}); '
                              'run again to resume')


def verify_md5(path, expected):
    with open(path, 'rb') as f:
        actual = hashlib.file_digest(f, 'md5').hexdigest()
    if actual != expected:
        bad = path.with_name(path.name + '.bad')
        path.replace(bad)
        raise utils.DataError(f'{path.name}: md5 mismatch: expected {expected}, got {actual}. '
                              f'Nothing was unpacked; the file was moved to {bad} for inspection. '
                              'Delete it and run again to download afresh.')


def archive_members(archive):
    """[(ZipInfo, relative target path)]: files of the archive, a wrapper folder above the data folders dropped."""
    members = [info for info in archive.infolist() if not info.is_dir() and not info.filename.startswith('__MACOSX/')]
    parts = [PurePosixPath(info.filename).parts for info in members]
    for info, p in zip(members, parts):
        if info.filename.startswith('/') or '..' in p:
            raise utils.DataError(f'{archive.filename}: unsafe path {info.filename!r} in the archive')
    tops, data_folders = {p[0] for p in parts}, {config.AUDIO_DIR, config.ANNOTATION_DIR}
    # e.g. MAESTRO_Real/development_audio/... -> development_audio/...
    wrapped = len(tops) == 1 and not tops & data_folders and any(len(p) > 2 and p[1] in data_folders for p in parts)
    return [(info, PurePosixPath(*(p[1:] if wrapped else p))) for info, p in zip(members, parts)]


def unpack(path, data_root):
    """Extract a verified zip archive into data_root, each file written atomically."""
    with zipfile.ZipFile(path) as archive:
        members = archive_members(archive)
        for info, relative in tqdm(members, desc=f'unpack {path.name}', unit='file', leave=False):
            def write(tmp, info=info):
                with archive.open(info) as source, open(tmp, 'wb') as target:
                    shutil.copyfileobj(source, target, CHUNK)
            utils.atomic_write(Path(data_root) / relative, write)
    return len(members)


def download_archives(archives, data_root, url_base=None, keep_archives=False, progress=True):
    """Download, verify and unpack every archive of `archives` ({name: (Zenodo record, md5)}) not done yet; returns
    the names downloaded now. url_base: a format string with {record} and {name}, or a base URL + the name."""
    data_root, url_base, downloaded = Path(data_root), url_base or config.ZENODO_URL, []
    for name, (record, md5) in archives.items():
        marker = data_root / f'.{name}.done'
        if marker.is_file() and marker.read_text().strip() == md5:
            print(f'{name}: already downloaded, verified and unpacked ({marker}); skipped')
            continue
        data_root.mkdir(parents=True, exist_ok=True)
        path = data_root / name
        if not path.is_file():                 # an archive kept from an earlier run is reused
            url = (url_base.format(record=record, name=name) if '{name}' in url_base
                   else url_base.rstrip('/') + '/' + name)
            part = data_root / f'{name}.part'
            fetch(url, part, progress)
            part.replace(path)
        verify_md5(path, md5)
        n_files = unpack(path, data_root)
        if not keep_archives:
            path.unlink()
        utils.write_text_atomic(marker, md5 + '\n')
        print(f'{name}: md5 ok, {n_files} files unpacked into {data_root}')
        downloaded.append(name)
    return downloaded


@experiment.command
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__.split('\n', 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', type=Path, default=config.DATA_ROOT,
                        help=f'where development_audio/ and development_annotation/ go (default {config.DATA_ROOT})')
    parser.add_argument('--evaluation', action='store_true',
                        help='also download the challenge evaluation audio (Zenodo record 7870026, no labels)')
    parser.add_argument('--url-base', default=config.ZENODO_URL,
                        help='URL format with {record} and {name}, or a base URL the archive name is appended to '
                             f'(default {config.ZENODO_URL})')
    parser.add_argument('--keep-archives', action='store_true',
                        help='keep the zip files after unpacking (default: delete them)')
    args = experiment.parse_args(parser, argv)
    archives = {**config.DEVELOPMENT_ARCHIVES, **(config.EVALUATION_ARCHIVES if args.evaluation else {})}
    download_archives(archives, args.data_root, args.url_base, args.keep_archives)
    print(f'data ready in {args.data_root}; next: python extract_features.py --data-root '
          f'{shlex.quote(str(args.data_root))}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
