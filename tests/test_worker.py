"""The worker process: crashes, cancel, saved prompt state, unload, captured logs."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from inference.errors import NoModelLoaded, WorkerCrashed
from inference.protocol import ChatMessage, Done, Failed, Generate, Load, Sampling, Token
from inference.worker import Worker, WorkerState
from tests.conftest import settings_for
from tests.tiny_models import MOE, write_tiny_model

GREEDY = Sampling(temperature=0, max_tokens=16)
QUESTION = (ChatMessage("user", "what does the library say about memory?"),)


def tokens_of(events: list) -> list[int]:
    return [e.id for e in events if isinstance(e, Token) and e.id is not None]


def test_llama_cpp_abort_becomes_an_error_event_and_the_parent_lives(
    worker: Worker, aborting_model: Path, moe_model: Path
) -> None:
    events = list(worker.request(Load(settings_for(aborting_model))))
    assert len(events) == 1
    failed = events[0]
    assert isinstance(failed, Failed) and failed.kind == "crash"
    assert "SIGABRT" in failed.message and "GGML_ASSERT" in failed.message
    assert any("llama_model_loader" in line for line in failed.log_tail)  # llama.cpp's last lines
    assert worker.state is WorkerState.CRASHED
    # we are still here, and the next request starts a fresh worker
    info = worker.load(settings_for(moe_model))
    assert info.n_ctx == 512
    assert tokens_of(list(worker.generate(Generate(messages=QUESTION, sampling=GREEDY))))


def test_a_killed_worker_is_reported_and_the_model_comes_back(worker: Worker, moe_model: Path) -> None:
    worker.load(settings_for(moe_model))
    expected = tokens_of(list(worker.generate(Generate(messages=QUESTION, sampling=GREEDY))))
    first_pid = worker.pid
    events = []
    for event in worker.generate(Generate(messages=QUESTION, sampling=Sampling(temperature=0, max_tokens=400))):
        events.append(event)
        if len(events) == 3:
            os.kill(first_pid, signal.SIGKILL)  # what the OOM killer does
    assert isinstance(events[-1], Failed) and events[-1].kind == "crash"
    assert "SIGKILL" in events[-1].message and "memory" in events[-1].message
    assert worker.state is WorkerState.CRASHED
    # the next request starts a new process and loads the same model again
    assert tokens_of(list(worker.generate(Generate(messages=QUESTION, sampling=GREEDY)))) == expected
    assert worker.pid != first_pid
    assert worker.state is WorkerState.LOADED


def test_a_worker_killed_before_it_read_the_request_is_not_a_crash_of_that_request(
        worker: Worker, moe_model: Path) -> None:
    """The race the idle check cannot see: the child dies after ``is_alive`` said yes and
    before it read the request. The request never ran, so it goes to a new child."""
    worker.load(settings_for(moe_model))
    expected = tokens_of(list(worker.generate(Generate(messages=QUESTION, sampling=GREEDY))))
    process = worker._process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=10)
    process.is_alive = lambda: True  # as if the kill landed just after the check
    events = list(worker.generate(Generate(messages=QUESTION, sampling=GREEDY)))
    assert not [e for e in events if isinstance(e, Failed)]
    assert tokens_of(events) == expected and isinstance(events[-1], Done)
    assert worker.state is WorkerState.LOADED and worker.pid not in (None, process.pid)


def test_a_child_process_ends_when_the_app_is_killed_even_mid_work(tmp_path: Path) -> None:
    """An orphaned child must not keep its memory until it next talks to the dead app."""
    script = (
        "import multiprocessing, sys, time\n"
        "from inference.orphans import exit_with_parent\n"
        "def child():\n"
        "    exit_with_parent()\n"
        "    time.sleep(120)  # busy, never reading its pipe\n"
        "if __name__ == '__main__':\n"
        "    p = multiprocessing.get_context('spawn').Process(target=child)\n"
        "    p.start()\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(120)\n"
    )
    import subprocess
    import sys
    parent_script = tmp_path / "parent.py"  # a file, so that the spawned child can import `child` from it
    parent_script.write_text(script)
    root = Path(__file__).parent.parent
    parent = subprocess.Popen([sys.executable, str(parent_script)], stdout=subprocess.PIPE, text=True, cwd=root,
                              env={**os.environ, "PYTHONPATH": str(root)})
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    time.sleep(2)  # the child is up and watching
    assert Path(f"/proc/{child_pid}").exists()
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{child_pid}").exists():
        time.sleep(0.05)
    still_there = Path(f"/proc/{child_pid}").exists()
    if still_there:
        os.kill(child_pid, signal.SIGKILL)
    assert not still_there


def test_cancel_stops_within_one_token_and_the_worker_stays_usable(worker: Worker, moe_model: Path) -> None:
    # a bigger context and one thread, so generation is long and not instant
    worker.load(settings_for(moe_model, n_ctx=4096, n_threads=1))
    tokens: list[Token] = []
    cancelled_at = None
    done = None
    for event in worker.generate(Generate(messages=QUESTION, sampling=Sampling(temperature=0, max_tokens=3000))):
        if isinstance(event, Token):
            tokens.append(event)
            if len(tokens) == 5:
                cancelled_at = time.monotonic()
                worker.cancel()
        elif isinstance(event, Done):
            done = event
    assert done is not None and done.stats.stop_reason == "cancelled"
    assert cancelled_at is not None
    sampled_after_cancel = [t for t in tokens if t.id is not None and t.at > cancelled_at]
    assert len(sampled_after_cancel) <= 1
    assert done.stats.generated_tokens < 3000
    # usable afterwards, with no stale events from the cancelled stream
    events = list(worker.generate(Generate(messages=QUESTION, sampling=GREEDY)))
    assert isinstance(events[-1], Done) and events[-1].stats.generated_tokens == GREEDY.max_tokens


def test_abandoning_a_stream_leaves_the_worker_in_sync(moe_worker: Worker) -> None:
    hello = moe_worker.tokenize("hello library")
    reply = tokens_of(list(moe_worker.generate(Generate(messages=QUESTION, sampling=GREEDY))))
    stream = moe_worker.generate(Generate(messages=QUESTION, sampling=Sampling(temperature=0, max_tokens=300)))
    for event in stream:
        if isinstance(event, Token):
            break
    stream.close()
    # the next requests get their own answers, not what was left of the abandoned reply
    assert moe_worker.tokenize("hello library") == hello and len(hello) >= 2
    events = list(moe_worker.generate(Generate(messages=QUESTION, sampling=GREEDY)))
    assert tokens_of(events) == reply and len(reply) == GREEDY.max_tokens and isinstance(events[-1], Done)


def test_saved_prefix_restored_in_a_fresh_worker_continues_identically(tmp_path: Path, moe_model: Path) -> None:
    settings = settings_for(moe_model)
    prefix = (ChatMessage("system", "Documents: the secure library of the model " * 4),)
    full = (*prefix, ChatMessage("user", "what is in the library?"))
    with Worker(tmp_path / "a" / "llama.log") as first:
        first.load(settings)
        uninterrupted = tokens_of(list(first.generate(Generate(messages=full, sampling=GREEDY))))
        prefix_ids = first.render_chat(prefix, add_generation_prompt=False).ids
        list(first.generate(Generate(messages=prefix, sampling=Sampling(temperature=0, max_tokens=1))))
        saved = first.save_state(tmp_path / "prefix.kv", n_tokens=len(prefix_ids))
    assert saved == len(prefix_ids)

    with Worker(tmp_path / "b" / "llama.log") as second:
        second.load(settings)
        assert second.restore_state(tmp_path / "prefix.kv") == len(prefix_ids)
        events = list(second.generate(Generate(messages=full, sampling=GREEDY)))
    assert tokens_of(events) == uninterrupted
    assert events[-1].stats.cached_tokens == len(prefix_ids)


def test_restoring_a_state_from_another_model_fails_clearly(tmp_path: Path, moe_model: Path,
                                                           dense_model: Path) -> None:
    with Worker(tmp_path / "llama.log") as w:
        w.load(settings_for(moe_model))
        list(w.generate(Generate(messages=QUESTION, sampling=Sampling(temperature=0, max_tokens=1))))
        w.save_state(tmp_path / "moe.kv")
        w.load(settings_for(dense_model))
        with pytest.raises(Exception, match="does not fit this model"):
            w.restore_state(tmp_path / "moe.kv")
        assert tokens_of(list(w.generate(Generate(messages=QUESTION, sampling=GREEDY))))


def test_unload_ends_the_process(worker: Worker, moe_model: Path) -> None:
    worker.load(settings_for(moe_model))
    pid = worker.pid
    assert pid is not None
    worker.unload()
    assert worker.pid is None and worker.state is WorkerState.STOPPED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_requests_without_a_model_fail_plainly(worker: Worker) -> None:
    with pytest.raises(NoModelLoaded, match="No model is loaded"):
        worker.tokenize("hello")


def test_llama_cpp_log_goes_to_the_log_file_not_the_terminal(
    worker: Worker, moe_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    worker.load(settings_for(moe_model))
    list(worker.generate(Generate(messages=QUESTION, sampling=GREEDY)))
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    log_text = worker.log_path.read_text()
    assert "llama_model_loader: loaded meta data" in log_text
    assert "enclave.llama" in log_text  # through Python logging, not raw
    assert any("KV buffer size" in line for line in worker.info.log_lines)


def test_hostile_chat_template_is_refused_not_run(worker: Worker, tmp_path: Path) -> None:
    hostile = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m.content }}{% endfor %}"
    path = write_tiny_model(tmp_path / "hostile.gguf", replace(MOE, chat_template=hostile))
    worker.load(settings_for(path))
    events = list(worker.generate(Generate(messages=QUESTION, sampling=GREEDY)))
    assert isinstance(events[-1], Failed) and events[-1].kind == "template"
    assert "unsafe" in events[-1].message
    assert worker.state is WorkerState.LOADED  # the worker lives on
    assert worker.tokenize("hello")


def test_crash_error_type_for_callers(worker: Worker, aborting_model: Path) -> None:
    with pytest.raises(WorkerCrashed) as info:
        worker.load(settings_for(aborting_model))
    assert info.value.log_tail
