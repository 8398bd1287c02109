"""`cipug adopt SERVICE` / `--all`: bring a compose project as it is under cipug.

For each compose service whose `image:` is a plain `repo:tag`, the line becomes
`image: ${SERVICE_<NAME>_IMAGE_HASHED}` and `.env` gets `SERVICE_<NAME>_IMAGE_TAGGED=repo:tag`; then
the service is pinned as a first run would (or, with --no-pin, by the next run). Only those lines change:
every other byte of both files stays, and both are written atomically. A compose file the scanner
cannot read with certainty (cipug.composefile) or whose images already use variables is refused with
the reason and the line, and nothing is written.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..composefile import ImageLine, Unsure, parse
from ..envfile import EnvFile
from ..errors import CipugError, ExitCode, combine_codes
from ..files.atomic import read_text, write_atomic
from ..files.lock import run_lock
from ..log import Log
from ..lookup.references import parse_reference
from ..services import is_tagged_key
from ..settings import COMPOSE_FILE_NAMES, Settings

# What a refusal is: adopting cannot be done as asked, and nothing was changed.
REFUSED = ExitCode.ROLLBACK_REFUSED


@dataclass(frozen=True)
class Adopted:
    """One compose service to adopt: its image as written and the entry names derived for it."""

    image: ImageLine
    name: str  # SERVICE_<NAME>_IMAGE_… without prefix and suffix

    @property
    def tagged_key(self) -> str:
        return f"SERVICE_{self.name}_IMAGE_TAGGED"

    @property
    def hashed_key(self) -> str:
        return f"SERVICE_{self.name}_IMAGE_HASHED"


@dataclass(frozen=True)
class Adoption:
    """What adopting one folder changes: both files' texts before and after, and why services were left."""

    service: str
    compose_file: Path
    env_file: Path
    compose_before: str
    compose_after: str
    env_before: str | None  # None: there is no .env yet
    env_after: str
    adopted: tuple[Adopted, ...]
    left: tuple[str, ...]

    def diff(self) -> str:
        """Both files' changes as one unified diff."""
        parts: list[str] = []
        for path, before, after in ((self.compose_file, self.compose_before, self.compose_after),
                                    (self.env_file, self.env_before or "", self.env_after)):
            parts += difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                          f"{path} (before)", f"{path} (after)")
        return "".join(line if line.endswith("\n") else line + "\n" for line in parts)


def entry_name(folder: str, compose_service: str) -> str:
    """The NAME in SERVICE_<NAME>_IMAGE_*: the folder's name, and the compose service's where it differs."""
    words = [folder] if compose_service.lower() == folder.lower() else [folder, compose_service]
    return "_".join(re.sub(r"[^A-Z0-9]+", "_", word.upper()).strip("_") for word in words)


def plan_adoption(service: str, folder: Path, compose_file: Path, env_name: str) -> Adoption:
    """What adopting the folder would write; raises CipugError (REFUSED) naming the reason and the line."""
    try:
        compose_before = read_text(compose_file)
    except OSError as error:
        raise CipugError(f"{compose_file} cannot be read: {error.strerror}", REFUSED) from None
    try:
        scanned = parse(compose_before)
    except Unsure as error:
        raise CipugError(f"{compose_file}: line {error.line}: {error.reason}; cipug does not edit it" if error.line
                         else f"{compose_file}: {error.reason}; cipug does not edit it", REFUSED) from None
    env_file = folder / env_name
    try:
        env_before: str | None = read_text(env_file)
    except FileNotFoundError:
        env_before = None
    except OSError as error:
        raise CipugError(f"{env_file} cannot be read: {error.strerror}", REFUSED) from None
    env = EnvFile.parse(env_before or "", env_file)
    adopted: list[Adopted] = []
    left: list[str] = []
    names: dict[str, str] = {}
    for name, image in scanned.images.items():
        if image.variables:
            if all(is_tagged_key(variable.removesuffix("HASHED") + "TAGGED") for variable in image.variables):
                left.append(f"{name}: already uses {', '.join(image.variables)}")
                continue
            raise CipugError(f"{compose_file}: line {image.line}: the image of {name} uses the variable"
                             f"{'s' if len(image.variables) > 1 else ''} {', '.join(image.variables)}; cipug does "
                             "not edit it (pin its tag by hand: SERVICE_<NAME>_IMAGE_TAGGED in .env, "
                             "${SERVICE_<NAME>_IMAGE_HASHED} as its image)", REFUSED)
        if "@" in image.value:
            left.append(f"{name}: already pinned by digest ({image.value})")
            continue
        try:
            parse_reference(image.value)
        except ValueError as error:
            raise CipugError(f"{compose_file}: line {image.line}: the image of {name}, {image.value!r}, is not an "
                             f"image reference ({error})", REFUSED) from None
        candidate = Adopted(image, entry_name(service, name))
        if not candidate.name or not is_tagged_key(candidate.tagged_key):
            raise CipugError(f"{compose_file}: line {image.line}: {name} gives no usable entry name "
                             f"({candidate.tagged_key})", REFUSED)
        if candidate.name in names:
            raise CipugError(f"{compose_file}: line {image.line}: {name} and {names[candidate.name]} would both be "
                             f"{candidate.tagged_key}", REFUSED)
        names[candidate.name] = name
        for key in (candidate.tagged_key, candidate.hashed_key):
            if env.get(key) is not None:
                raise CipugError(f"{env_file}: {key} is already there, but {compose_file} line {image.line} does "
                                 f"not use it; cipug does not guess which is meant", REFUSED)
        adopted.append(candidate)
    left += [f"{name}: built, no image" for name in scanned.without_image]
    lines = list(scanned.lines)
    for item in adopted:
        text = lines[item.image.line - 1]
        quote = item.image.quote
        lines[item.image.line - 1] = (text[:item.image.start] + quote + "${" + item.hashed_key + "}" + quote
                                      + text[item.image.end:])
    return Adoption(service, compose_file, env_file, compose_before, "".join(lines), env_before,
                    _with_entries(env_before or "", adopted), tuple(adopted), tuple(left))


def _with_entries(text: str, adopted: Iterable[Adopted]) -> str:
    """The .env text with a TAGGED line per adopted image at its end, in the file's line endings."""
    lines = [f"{item.tagged_key}={item.image.value}" for item in adopted]
    if not lines:
        return text
    ending = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith(("\n", "\r")):
        text += ending
    return text + ending.join(lines) + ending


def write_adoption(adoption: Adoption) -> None:
    """Write .env, then the compose file; when the compose file cannot be written, .env is put back."""
    write_atomic(adoption.env_file, adoption.env_after)
    try:
        write_atomic(adoption.compose_file, adoption.compose_after)
    except CipugError:
        # TAGGED lines alone would make the next run pin images the compose file does not use.
        if adoption.env_before is None:
            adoption.env_file.unlink(missing_ok=True)
        else:
            write_atomic(adoption.env_file, adoption.env_before)
        raise


def _folders(settings: Settings, names: Iterable[str], every: bool) -> list[tuple[str, Path, Path]]:
    """(name, folder, compose file) of the folders to adopt: those named, or with `every` all that have a compose file.

    Not services.find_services: a folder to adopt may have no .env yet.
    """
    root = settings.services_root
    if not root.is_dir():
        raise CipugError(f"SERVICES_ROOT {root} is not a directory", ExitCode.DIRECTORY_NOT_FOUND)
    candidates = (sorted(path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
                  if every else list(names))
    compose_names = (settings.compose_file_name,) if settings.compose_file_name else COMPOSE_FILE_NAMES
    found = []
    for name in candidates:
        folder = root / name
        if not folder.is_dir():
            raise CipugError(f"{folder} is not a directory", ExitCode.DIRECTORY_NOT_FOUND)
        compose_file = next((folder / file for file in compose_names if (folder / file).is_file()), None)
        if compose_file is None:
            if not every:
                raise CipugError(f"{folder} has no {' or '.join(compose_names)}", ExitCode.DIRECTORY_NOT_FOUND)
            continue
        found.append((name, folder, compose_file))
    return found


def adopt(settings: Settings, log: Log, names: Iterable[str], *, every: bool, pin: bool,
          confirm: Callable[[str], bool], pin_service: Callable[[list[str]], ExitCode]) -> ExitCode:
    """Adopt the named folders (or every one): preview, confirm, write, then pin through `pin_service`."""
    codes: list[ExitCode] = []
    with run_lock(settings):
        adoptions = []
        for name, folder, compose_file in _folders(settings, names, every):
            try:
                adoption = plan_adoption(name, folder, compose_file, settings.env_file_name)
            except CipugError as error:
                log.error(f"{name}: not adopted: {error.message}")
                codes.append(error.code)
                continue
            for reason in adoption.left:
                log.info(f"{name}: left as it is: {reason}")
            if not adoption.adopted:
                log.info(f"{name}: nothing to adopt")
                continue
            adoptions.append(adoption)
        if not adoptions:
            return combine_codes(codes)
        for adoption in adoptions:
            log.info(adoption.diff().rstrip("\n"))
        entries = sum(len(adoption.adopted) for adoption in adoptions)
        then = "then pin them as an update run does" if pin else "and leave pinning to the next update run"
        if not confirm(f"Write these changes ({entries} image{'s' if entries > 1 else ''}), {then}?"):
            log.info("nothing was changed")
            return combine_codes(codes)
        written = []
        for adoption in adoptions:
            try:
                write_adoption(adoption)
            except CipugError as error:
                log.error(f"{adoption.service}: not adopted: {error.message}")
                codes.append(error.code)
                continue
            written.append(adoption.service)
            log.success(f"{adoption.service}: adopted " + ", ".join(
                f"{item.image.service} as {item.tagged_key}" for item in adoption.adopted))
    if written and pin:
        codes.append(pin_service(written))
    elif written:
        log.info(f"{', '.join(written)}: the next update run pins the images (until then, `docker compose` "
                 "refuses the compose file: its HASHED variables are not set)")
    return combine_codes(codes)
