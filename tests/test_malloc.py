"""``resources.retain_freed_memory``: glibc keeps freed memory in the process (no page faults
for re-used buffers), and every actor's process, and ``--local``'s, sets it as configured."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import tests.test_loop as loop_tests
from online_dt.util import malloc
from tests.tiny import build_tiny_model

glibc_only = pytest.mark.skipif(malloc.glibc() is None, reason="mallopt settings are glibc's")

# twenty 1 MiB blocks written and freed, ten times: with glibc's defaults the 20 MiB at the
# heap's top are given back to the OS after each round and faulted in again in the next
FAULTS = textwrap.dedent(
    """
    import ctypes, resource, sys
    from online_dt.util.malloc import retain_freed_memory
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    def round_():
        blocks = [libc.malloc(1 << 20) for _ in range(20)]
        for b in blocks:
            libc.memset(b, 1, 1 << 20)
        for b in blocks:
            libc.free(b)
    round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        round_()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@glibc_only
def test_freed_memory_is_reused_without_page_faults():
    # 10 rounds x 20 MiB = 51,200 pages: about that many faults with glibc's defaults
    assert _page_faults("default") > 20_000
    assert _page_faults("retain") < 1_000


@pytest.mark.parametrize("kwargs", [{"mmap_threshold": -1}, {"trim_threshold": 2**31}])
def test_thresholds_outside_a_c_int_are_refused(kwargs):
    with pytest.raises(ValueError, match="2\\*\\*31 - 1"):
        malloc.retain_freed_memory(**kwargs)


def test_another_c_library_is_left_as_it_is(monkeypatch):
    class NotGlibc:  # a C library without glibc's gnu_get_libc_version (macOS, musl)
        def __init__(self, name):
            pass

    monkeypatch.setattr(malloc.ctypes, "CDLL", NotGlibc)
    assert malloc.retain_freed_memory() is False


# -- where it is called ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


@pytest.fixture
def calls(monkeypatch):
    """Replaces ``retain_freed_memory`` where the actors and ``--local`` call it; records calls."""
    import actors.reward
    import actors.workers

    made: list[str] = []
    for module in (actors.workers, actors.reward, malloc):
        monkeypatch.setattr(module, "retain_freed_memory", lambda: made.append("retain") or True)
    return made


@pytest.mark.parametrize("retain", [True, False])
def test_each_actor_sets_it_as_configured(tmp_path, base, calls, retain):
    from actors.reward import RewardModelActor
    from actors.workers import LearnerActor, SamplerActor

    cfg = loop_tests.make_cfg(tmp_path, base)
    cfg = cfg.model_copy(
        update={"resources": cfg.resources.model_copy(update={"retain_freed_memory": retain})}
    )
    RewardModelActor(cfg)
    SamplerActor(cfg, None)
    LearnerActor(cfg, str(base), str(tmp_path / "run"), None)
    assert calls == (["retain"] * 3 if retain else [])


@pytest.mark.parametrize("retain", [True, False])
def test_a_local_run_sets_it_as_configured(tmp_path, base, calls, monkeypatch, retain):
    import yaml

    import online_dt.loop.workers
    from online_dt.run import main

    def no_workers(*args, **kwargs):
        raise RuntimeError("stopped before the workers")

    monkeypatch.setattr(online_dt.loop.workers, "local_workers", no_workers)
    cfg = loop_tests.make_cfg(tmp_path, base).model_dump(mode="json")
    cfg["resources"]["retain_freed_memory"] = retain
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path), "--local", "--no-progress"]) == 1
    assert calls == (["retain"] if retain else [])
