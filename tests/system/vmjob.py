"""Prepares and runs a job of the system test VM (host side).

A job is a folder shared with the VM over 9p: run.sh (what the image's
cipug-test-job.service runs), guest.py (the scenarios), src/cipug (a copy of the
package under test), cli-lib/ (Typer and its dependencies, when this Python has
them, for `cipug history`), units/readme/ (README's unit and timer, as documented)
and scenarios (their names, in order). The VM writes out/.

Also a script, to debug by hand (as root):

    python3 tests/system/vmjob.py JOB_DIR [--source DIR] [SCENARIO ...]
    tests/system/run-vm.sh "$(tests/system/build-image.sh)" JOB_DIR
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUILD = HERE / "build-image.sh"
RUN_VM = HERE / "run-vm.sh"

# In boot order; test_vm.py groups them into one boot. s6 reads what s1 and s5 left behind.
SCENARIOS = ("s1_readme", "s1_bare", "s1_module", "s5_timer", "s5_persistent", "s6_directories", "s2_pull",
             "s2_restart", "s4_systemd_units", "s3_health")

GUEST_PYTHON = (3, 11)  # Debian 12's python3

RUN_SH = "#!/bin/sh\nexec /usr/bin/python3 /job/guest.py\n"


def readme_units(readme: Path = REPO / "README.md") -> dict[str, str]:
    """README's "minimal systemd service and timer": {file name: text}, exactly as documented."""
    text = readme.read_text()
    blocks = re.findall(r"```ini\n(.*?)```", text, re.S)
    for block in blocks:
        if "/etc/systemd/system/cipug.service" in block:
            break
    else:
        raise LookupError("README.md has no ```ini block with /etc/systemd/system/cipug.service")
    files: dict[str, list[str]] = {}
    current = None
    for line in block.splitlines():
        match = re.match(r"#\s*/etc/systemd/system/(\S+)\s*$", line)
        if match:
            current = match.group(1)
            files[current] = []
        elif current is not None:
            files[current].append(line)
    return {name: "\n".join(lines).strip() + "\n" for name, lines in files.items()}


def copy_package(source: Path, destination: Path) -> None:
    shutil.copytree(source, destination / "cipug", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def copy_cli_lib(destination: Path) -> list[str]:
    """Typer and what it needs, from this interpreter, if all pure Python; the distributions copied."""
    try:
        metadata.distribution("typer")
    except metadata.PackageNotFoundError:
        return []
    todo, seen, files = ["typer"], set(), []
    while todo:
        name = re.split(r"[\s<>=!~;\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                todo.append(requirement)
        for file in dist.files or []:
            if file.suffix in (".so", ".pyd") and sys.version_info[:2] != GUEST_PYTHON:
                return []  # compiled for another Python than the VM's: it could not load it
            if ".." in file.parts or file.suffix == ".pyc":
                continue  # console scripts outside site-packages, bytecode
            files.append((file, dist.locate_file(file)))
    for relative, path in files:
        if "__pycache__" in relative.parts or not Path(path).is_file():
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return sorted(seen)


def prepare(job: Path, source: Path = REPO / "cipug", scenarios=SCENARIOS, timeout: int = 1500) -> dict:
    job.mkdir(parents=True, exist_ok=True)
    (job / "run.sh").write_text(RUN_SH)
    shutil.copy(HERE / "guest.py", job / "guest.py")
    copy_package(source, job / "src")
    units = job / "units" / "readme"
    units.mkdir(parents=True)
    for name, text in readme_units().items():
        (units / name).write_text(text)
    cli = copy_cli_lib(job / "cli-lib")
    (job / "scenarios").write_text("\n".join(scenarios) + "\n")
    (job / "timeout").write_text(f"{timeout}\n")
    return {"cli_lib": cli}


def build_image() -> tuple[Path, float]:
    begin = time.monotonic()
    result = subprocess.run([str(BUILD)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"build-image.sh failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1]), time.monotonic() - begin


def boot(image: Path, job: Path, timeout: int = 1560) -> tuple[int, float]:
    begin = time.monotonic()
    result = subprocess.run([str(RUN_VM), str(image), str(job), str(timeout)], capture_output=True, text=True)
    return result.returncode, time.monotonic() - begin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", type=Path)
    parser.add_argument("--source", type=Path, default=REPO / "cipug", help="the cipug package folder to test")
    parser.add_argument("--run", action="store_true", help="also build (if needed) and boot")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    print(prepare(args.job, args.source, args.scenarios))
    if args.run:
        image, seconds = build_image()
        print(f"image {image} ({seconds:.0f} s)")
        rc, seconds = boot(image, args.job)
        print(f"VM exit {rc} after {seconds:.0f} s; results in {args.job / 'out'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
