"""Hash-checked downloads of the datasets from their official sources.

Only the publishers' own addresses are listed; every file is checked against the MD5 the publisher
(and torchvision) give before it is kept, so a mirror, proxy or truncated transfer cannot slip in
altered data. MD5 is used because it is what the publishers publish; it guards integrity here, not
authenticity against a determined attacker.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional

from tqdm import tqdm

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from: a base address and ``{file name: md5}``."""

    base_url: str
    files: dict[str, str]
    homepage: str


# The publishers' addresses (see each homepage) and MD5s.
SOURCES: dict[str, Source] = {
    "mnist": Source("http://yann.lecun.com/exdb/mnist/", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }, "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": Source("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }, "https://github.com/zalandoresearch/fashion-mnist"),
    "kmnist": Source("http://codh.rois.ac.jp/kmnist/dataset/kmnist/", {
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
    }, "https://github.com/rois-codh/kmnist"),
    "cifar10": Source("https://www.cs.toronto.edu/~kriz/", {
        "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    }, "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": Source("https://www.cs.toronto.edu/~kriz/", {
        "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    }, "https://www.cs.toronto.edu/~kriz/cifar.html"),
}


class DownloadError(OSError):
    """A download failed (no network, HTTP error) or its content did not match the MD5."""


def md5sum(path: pathlib.Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()  # noqa: S324 - the publishers' checksums are MD5
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: pathlib.Path, md5: str, *, timeout: float = 30.0,
          progress: bool = True) -> pathlib.Path:
    """Download ``url`` to ``dest`` through a ``.part`` file, with a byte progress bar, and keep it
    only if its MD5 is ``md5``. Raises DownloadError saying what failed; never leaves a partial or
    mismatching file at ``dest``."""
    dest = pathlib.Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = response.headers.get("Content-Length") if response.headers else None
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      desc=dest.name, disable=not progress, leave=False) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot download {url}: {reason} (is the network reachable?)") from exc
    got = md5sum(part)
    if got != md5:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: MD5 mismatch (expected {md5}, got {got}); the download was "
                            "discarded")
    os.replace(part, dest)
    return dest


def download(name: str, directory: pathlib.Path, *, progress: bool = True,
             timeout: float = 30.0, sources: Optional[dict[str, Source]] = None) -> pathlib.Path:
    """Fetch every file of dataset ``name`` into ``directory`` (files already there with the right
    MD5 are kept). Returns ``directory``. Raises DownloadError (or KeyError for unknown names)."""
    source = (sources or SOURCES)[name]
    directory = pathlib.Path(directory)
    for file, md5 in source.files.items():
        dest = directory / file
        if dest.is_file() and md5sum(dest) == md5:
            continue
        print(f"downloading {source.base_url}{file} -> {dest}", flush=True)
        fetch(source.base_url + file, dest, md5, timeout=timeout, progress=progress)
    return directory
