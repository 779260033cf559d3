"""The code-location image's install (deploy/Dockerfile), replayed without Docker.

The Dockerfile's COPY instructions are parsed (with Dockerfile.dockerignore applied, as BuildKit does), exactly those
paths are copied into a folder that stands for the image's file system, the copied project is installed non-editable
(`pip install --no-deps --no-build-isolation`, like the Dockerfile) into a fresh virtual environment that reuses this
interpreter's installed dependencies through a `.pth` file (nothing is downloaded), and then, from a working directory
outside every source tree: `python -m ultraedit_dagster.lake.dbt_project` must write the dbt manifest inside the
installed package and `ultraedit_dagster.definitions` must load from the installed copy. This fails when the wheel
does not ship something the package needs at run time (the dbt_quality project, its data files, the readme...).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path, PurePosixPath

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "Dockerfile.dockerignore"
KNOWN_ASSETS = {"source_images", "filtered_release", "release_card", "shard_quality"}


# ----------------------------------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; `\\` continuations joined, comment lines dropped (even within them)."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, args = line.partition(" ")
        instructions.append((word.upper(), args.strip()))
    if pending:
        word, _, args = pending.strip().partition(" ")
        instructions.append((word.upper(), args.strip()))
    return instructions


def copy_instructions(text: str) -> list[tuple[list[str], PurePosixPath, bool]]:
    """Each COPY/ADD from the build context as (sources, absolute destination, destination-is-a-folder)."""
    copies = []
    workdir = PurePosixPath("/")
    for word, args in dockerfile_instructions(text):
        if word == "FROM":
            workdir = PurePosixPath("/")
        elif word == "WORKDIR":
            workdir = workdir / args  # an absolute WORKDIR replaces the previous one
        elif word in ("COPY", "ADD"):
            tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
            flags = [t for t in tokens if t.startswith("--")]
            paths = [t for t in tokens if not t.startswith("--")]
            if any(f.startswith("--from=") for f in flags):
                continue  # from another stage or image, not from the build context
            assert len(paths) >= 2, f"cannot read {word} {args}"
            *sources, dest = paths
            assert not any("$" in p for p in paths), f"variables in {word} {args} are not supported by this test"
            is_dir = dest.endswith("/") or len(sources) > 1 or any(ch in s for s in sources for ch in "*?[")
            copies.append((sources, workdir / dest, is_dir))
    return copies


def dockerignore_patterns(path: Path) -> list[tuple[re.Pattern[str], bool]]:
    """(regex, is_exception) per pattern, compiled like Docker's patternmatcher (`*` and `?` stop at `/`, `**` does
    not; a pattern is relative to the context root, so `lake/` is the top-level folder only)."""
    patterns = []
    if not path.exists():
        return patterns
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
        regex, i = "", 0
        while i < len(line):
            ch = line[i]
            if ch == "*" and line[i + 1 : i + 2] == "*":
                i += 2
                if line[i : i + 1] == "/":
                    i += 1
                regex += ".*" if i >= len(line) else "(.*/)?"
                continue
            if ch == "*":
                regex += "[^/]*"
            elif ch == "?":
                regex += "[^/]"
            elif ch == "\\" and i + 1 < len(line):
                i += 1
                regex += re.escape(line[i])
            elif ch in "[]":
                regex += ch
            else:
                regex += re.escape(ch)
            i += 1
        patterns.append((re.compile(f"^{regex}$"), negate))
    return patterns


def is_ignored(rel: str, patterns: list[tuple[re.Pattern[str], bool]]) -> bool:
    """A path is left out of the context when the last pattern matching it or one of its parent folders excludes it."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for regex, negate in patterns:
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


def replay_copies(image: Path) -> dict[PurePosixPath, list[str]]:
    """Copy what the Dockerfile copies from the repository (the build context) into `image` (the image's `/`);
    returns {destination: [context paths]} for the assertions' messages."""
    patterns = dockerignore_patterns(DOCKERIGNORE)
    copied: dict[PurePosixPath, list[str]] = {}

    def place(src: Path, target: Path) -> None:
        rel = src.relative_to(REPO).as_posix()
        if is_ignored(rel, patterns):
            return
        if src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            for child in sorted(src.iterdir()):
                place(child, target / child.name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)

    for sources, dest, is_dir in copy_instructions(DOCKERFILE.read_text()):
        target = image / dest.relative_to("/")
        for source in sources:
            matches = sorted(REPO.glob(source)) if any(ch in source for ch in "*?[") else [REPO / source]
            for src in matches:
                rel = src.relative_to(REPO).as_posix()
                assert src.exists() and not is_ignored(rel, patterns), f"COPY {source}: not in the build context"
                if src.is_dir():  # a folder's contents go into the destination
                    place(src, target)
                else:
                    place(src, target / src.name if is_dir else target)
                copied.setdefault(dest, []).append(rel)
    return copied


# ---------------------------------------------------------------------------------------------------------- processes


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def clean_env(tmp_path: Path) -> dict[str, str]:
    """This environment without anything that points Python at another environment or at the developer's state."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "ULTRAEDIT_LAKE", "ULTRAEDIT_WAREHOUSE"}
        and not k.startswith(("PIP_", "UV_"))
    }
    env.update(
        ULTRAEDIT_HOME=str(tmp_path / "ultraedit_home"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        PYTHONNOUSERSITE="1",
        PIP_NO_INDEX="1",  # offline: nothing may be downloaded
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        DAGSTER_DISABLE_TELEMETRY="1",
        HF_HUB_OFFLINE="1",
    )
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return env


def ultraedit_entries(site_packages: Path) -> list[str]:
    return sorted(p.name for p in site_packages.iterdir() if "ultraedit" in p.name.lower())


# --------------------------------------------------------------------------------------------------------------- test


@pytest.mark.slow
def test_dockerfile_install_ships_dbt_project_and_loads_definitions(tmp_path):
    text = DOCKERFILE.read_text()
    runs = "\n".join(args for word, args in dockerfile_instructions(text) if word == "RUN")
    # The steps this test replays are the ones the Dockerfile runs, in this order.
    assert not re.search(r"pip install[^\n]*\s(-e|--editable)\s", runs), (
        "the image must install the package non-editable"
    )
    install_at = runs.find("--no-build-isolation")
    parse_at = runs.find("-m ultraedit_dagster.lake.dbt_project")
    import_at = runs.find("ultraedit_dagster.definitions")
    assert 0 <= install_at < parse_at < import_at, "Dockerfile: install, then dbt parse, then import the definitions"

    # 1. The image's files: exactly what the COPY instructions bring from the build context.
    image = tmp_path / "image"
    copied = replay_copies(image)
    pyprojects = [dest for dest, rels in copied.items() for rel in rels if rel == "pyproject.toml"]
    assert len(pyprojects) == 1, f"the Dockerfile must copy pyproject.toml once: {copied}"
    project = image / pyprojects[0].relative_to("/")
    if not (project / "pyproject.toml").exists():  # copied to a file path rather than into a folder
        project = project.parent
    assert (project / "pyproject.toml").exists(), copied
    assert not (project / "ultraedit_dagster" / "dbt_quality" / "target").exists(), "a checkout's dbt target/ leaked in"

    # 2. A fresh environment that reuses this interpreter's dependencies (this is where the lock is installed).
    main_site = [Path(sysconfig.get_path("purelib"))]
    if sysconfig.get_path("platlib") != sysconfig.get_path("purelib"):
        main_site.append(Path(sysconfig.get_path("platlib")))
    main_scripts = Path(sysconfig.get_path("scripts"))
    main_entries = ultraedit_entries(main_site[0])
    env = clean_env(tmp_path)
    cwd = tmp_path / "cwd"  # outside every source tree: nothing on sys.path but the environments
    cwd.mkdir()
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=cwd, env=env)
    python = str(venv / "bin" / "python")
    site = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=cwd, env=env).stdout.strip()
    )
    # ensurepip seeds an old setuptools (no bdist_wheel without `wheel`); the image builds with the lock's setuptools,
    # which is the one installed in this interpreter's environment.
    run([python, "-m", "pip", "uninstall", "-y", "-q", "setuptools"], cwd=cwd, env=env)
    # A path line in a .pth only adds the folder to sys.path: the .pth files inside it (the main environment's
    # editable finder for ultraedit_dagster) are not processed, so only the installed copy below is importable.
    (site / "_reuse_main_env.pth").write_text("".join(f"{p}\n" for p in main_site))
    probe_code = (
        "import importlib.util as u, setuptools; print(u.find_spec('ultraedit_dagster')); print(setuptools.__file__)"
    )
    probe = run([python, "-c", probe_code], cwd=cwd, env=env).stdout.splitlines()
    assert probe[0] == "None", f"ultraedit_dagster is importable before the install (editable finder active?): {probe}"
    assert Path(probe[1]).is_relative_to(main_site[0]), probe
    # dbt next to the interpreter, where the image has it (dbt_project.dbt_executable() looks there first).
    (venv / "bin" / "dbt").symlink_to(main_scripts / "dbt")

    # 3. The install, as in the Dockerfile: non-editable, no dependencies, no build isolation, offline.
    run(
        [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation", str(project)],
        cwd=cwd,
        env=env,
    )
    shutil.rmtree(project)  # the Dockerfile removes the sources too: the installed copy must stand alone
    assert ultraedit_entries(main_site[0]) == main_entries, "the install touched the main environment"
    installed = site / "ultraedit_dagster"
    assert (installed / "__init__.py").exists() and not (installed / "dbt_quality" / "target").exists()
    # pyproject's `readme` must be copied too: setuptools only warns when it is missing and ships no description.
    (metadata,) = site.glob("ultraedit_dagster-*.dist-info/METADATA")
    readme_title = next(line for line in (REPO / "README.md").read_text().splitlines() if line.strip())
    assert readme_title in metadata.read_text(), "the wheel's metadata lacks the README (pyproject `readme`)"

    # 4. dbt parse into the installed package.
    manifest = installed / "dbt_quality" / "target" / "manifest.json"
    out = run([python, "-m", "ultraedit_dagster.lake.dbt_project"], cwd=cwd, env=env).stdout
    assert manifest.exists(), f"no manifest in the installed package: {out}"
    assert str(manifest) in out, out
    assert any(key.endswith(".shard_quality") for key in json.loads(manifest.read_text())["nodes"])

    # 5. The definitions load from the installed copy.
    check = (
        "import json, sys, ultraedit_dagster, ultraedit_dagster.definitions as d\n"
        "print(json.dumps({'file': ultraedit_dagster.__file__,"
        " 'editable': [m for m in sys.modules if 'editable' in m],"
        " 'assets': sorted(k.to_user_string() for k in d.defs.resolve_all_asset_keys())}))\n"
    )
    loaded = json.loads(run([python, "-c", check], cwd=cwd, env=env).stdout.strip().splitlines()[-1])
    assert Path(loaded["file"]).is_relative_to(site), loaded["file"]
    assert not Path(loaded["file"]).is_relative_to(REPO), loaded["file"]
    assert loaded["editable"] == [], loaded["editable"]
    assert KNOWN_ASSETS <= set(loaded["assets"]), loaded["assets"]
    assert not (cwd / ".ultraedit").exists(), "state was written into the working directory"
