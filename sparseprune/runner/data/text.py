"""Real English sentences for calibration and distillation: the Debian ``fortunes`` data
(fortune-mod: quotations, literature, science, law, ...; BSD licence), read deterministically.

Install: ``apt-get install -y fortunes`` (files in ``/usr/share/games/fortunes``; ``$FORTUNE_DIR``
overrides). :func:`sentences` cleans and splits the entries into sentences (files in sorted order,
entries in file order, exact duplicates dropped); :func:`split` holds some out by a hash of each
sentence, so the split does not move when the corpus grows.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import unicodedata
from typing import Iterator, Optional

FORTUNE_DIR = pathlib.Path("/usr/share/games/fortunes")
_SKIP = {"ascii-art", "translate-me"}  # pictures and non-English text
_ATTRIBUTION = re.compile(r"^\s*--\s")
_SPEAKER = re.compile(r"^[A-Z][\w .'-]{0,20}:\t+")
_ABBREVIATIONS = {"Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Prof", "Gen", "Col", "Capt", "Lt",
                  "Sgt", "Rev", "Hon", "vs", "etc", "e.g", "i.e", "cf", "No", "Vol", "Mt", "Ft",
                  "U.S", "Inc", "Co"}
# After . ! ? (and closing quotes or brackets), before a capital, digit or opening quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def corpus_dir(root: Optional[os.PathLike] = None) -> pathlib.Path:
    """The fortunes directory; FileNotFoundError saying how to install it."""
    path = pathlib.Path(root or os.environ.get("FORTUNE_DIR") or FORTUNE_DIR)
    if not path.is_dir():
        raise FileNotFoundError(f"the English text corpus is not installed ({path} does not "
                                "exist): apt-get install -y fortunes, or set FORTUNE_DIR")
    return path


def _entries(root: pathlib.Path) -> Iterator[str]:
    for path in sorted(p for p in root.iterdir() if p.is_file() and p.suffix not in (".dat", ".u8")
                       and not p.name.startswith(".") and p.name not in _SKIP):
        for entry in re.split(r"^%\s*$", path.read_text(encoding="utf-8", errors="replace"),
                              flags=re.M):
            lines = []
            for line in entry.splitlines():
                if _ATTRIBUTION.match(line):
                    break  # the author line and what follows it
                lines.append(_SPEAKER.sub("", line))
            yield "\n".join(lines)


def _split_sentences(text: str) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = " ".join(paragraph.split())
        pending = ""
        for part in _SENTENCE_END.split(paragraph) if paragraph else []:
            pending = f"{pending} {part}" if pending else part
            last = pending.rstrip("\"')]").rsplit(" ", 1)[-1].rstrip(".")
            if last in _ABBREVIATIONS or re.fullmatch(r"[A-Z]", last):  # "Mr." or an initial
                continue
            yield pending
            pending = ""
        if pending:
            yield pending


def _clean(text: str) -> Optional[str]:
    """The sentence normalised, or None when it is not prose (code, tables, headings)."""
    s = unicodedata.normalize("NFKC", text).strip()
    s = s.replace("``", '"').replace("''", '"').replace("\u201c", '"').replace("\u201d", '"')
    if s.count('"') % 2:  # a quote opened or closed in another sentence
        s = s[1:] if s.startswith('"') else (s[:-1] if s.endswith('"') else s)
    s = re.sub(r"\s+", " ", s).strip(" -*_~=#|")
    if not s or sum(c.isalpha() for c in s) < 0.75 * sum(not c.isspace() for c in s):
        return None
    if not re.search(r"[a-z]", s) or re.search(r"[{}<>\\@]|https?:|www\.|\$\w|;\s*$", s):
        return None
    if not (s[0].isupper() or s[0] in "\"'(") or s[-1] not in ".!?\"')":
        return None
    return s


def sentences(min_words: int = 5, max_words: int = 60,
              root: Optional[os.PathLike] = None) -> list[str]:
    """The corpus's sentences of ``min_words`` to ``max_words`` words, in a fixed order."""
    out, seen = [], set()
    for entry in _entries(corpus_dir(root)):
        for raw in _split_sentences(entry):
            s = _clean(raw)
            if s is None or not min_words <= len(s.split()) <= max_words:
                continue
            key = re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()
            if key not in seen:
                seen.add(key)
                out.append(s)
    return out


def split(texts: list[str], heldout: float = 0.1) -> tuple[list[str], list[str]]:
    """(train, held out): a sentence is held out when a hash of it falls in the first
    ``heldout`` share of the range; order kept."""
    def held(s: str) -> bool:
        return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big") < heldout * 2**64
    return [s for s in texts if not held(s)], [s for s in texts if held(s)]
