"""Runs test cases in a worker process, so that a crash (a segfault in a kernel) fails the one
case instead of killing pytest: the worker is restarted after it. Functions are named by module and
attribute and must be importable by the worker (tests/ is on its path); arguments and results are
pickled (tensors included). The worker inherits the environment, so under `make sanitize` it runs
with AddressSanitizer too."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from typing import Any

_WORKER = r"""
import importlib, pickle, struct, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
sys.stdout = sys.stderr  # prints from cases must not corrupt the channel
while True:
    head = inp.read(8)
    if len(head) < 8:
        break
    module, name, args = pickle.loads(inp.read(struct.unpack("<Q", head)[0]))
    try:
        result = ("ok", getattr(importlib.import_module(module), name)(*args))
    except Exception as e:
        result = ("raise", type(e).__name__, str(e))
    blob = pickle.dumps(result)
    out.write(struct.pack("<Q", len(blob)) + blob)
    out.flush()
"""


class Worker:
    """One worker process; :meth:`call` returns ``("ok", result)``, ``("raise", type, message)``
    or ``("crash", returncode, stderr tail)``."""

    def __init__(self) -> None:
        self.proc = None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     cwd=os.getcwd())

    def call(self, module: str, name: str, *args: Any) -> tuple:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        blob = pickle.dumps((module, name, args))
        try:
            self.proc.stdin.write(struct.pack("<Q", len(blob)) + blob)
            self.proc.stdin.flush()
            head = self.proc.stdout.read(8)
            if len(head) == 8:
                return pickle.loads(self.proc.stdout.read(struct.unpack("<Q", head)[0]))
        except (BrokenPipeError, OSError):
            pass
        code = self.proc.wait()
        tail = self.proc.stderr.read().decode(errors="replace")[-3000:]
        self.proc = None
        return ("crash", code, tail)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        self.proc = None
