"""`cipug hold` and `cipug release`: keep a service (or one image entry) on its pins, and let it go again.

A held service is still checked (`check` shows what is available) but never changed by `update`.
`release` also forgets the digests that failed (were rolled back automatically), so they are tried
again. Both work under the run lock, so a timer run never sees half of it, on any service folder
(the filters only choose what the update run touches).
"""

from __future__ import annotations

import dataclasses

from ..errors import CipugError, ExitCode
from ..files import state as state_file
from ..files.lock import run_lock
from ..holds import held, hold_text, now_iso, released, state_path
from ..log import Log
from ..plan import read_plan
from ..services import Service, select_services
from ..settings import Settings


def _service(settings: Settings, log: Log, name: str) -> Service:
    unfiltered = dataclasses.replace(settings, services_filter=(), services_filter_exclude=())
    [service] = select_services(unfiltered, log, [name])
    return service


def entry_key(service: Service, entry: str) -> str:
    """The HASHED key of `entry` (its HASHED or TAGGED key) in the service's .env; USAGE when it has none."""
    plan = read_plan(service)
    if plan.error is not None:
        raise plan.error
    keys = [item.hashed_key for item in plan.entries]
    key = entry.removesuffix("TAGGED") + "HASHED" if entry.endswith("_IMAGE_TAGGED") else entry
    if key not in keys:
        raise CipugError(f"{service.name}: {service.env_file} has no image entry {entry} (entries: "
                         f"{', '.join(keys) or 'none'})", ExitCode.USAGE)
    return key


def hold(settings: Settings, log: Log, name: str, *, entry: str | None = None, reason: str = "") -> ExitCode:
    """Hold the service `name`, or one of its entries; the exit code."""
    with run_lock(settings):
        service = _service(settings, log, name)
        key = entry_key(service, entry) if entry is not None else None
        path = state_path(settings)
        before = state_file.load(path, log)
        new_hold = state_file.Hold(now_iso(), reason)
        state_file.save(path, held(before, state_file.service_key(service.folder), name, new_hold, key))
    what = name if key is None else f"{name} {key}"
    log.info(f"{what}: {hold_text(new_hold)}; update runs check it but change nothing until `cipug release "
             f"{name}{'' if key is None else ' --entry ' + key}`")
    return ExitCode.OK


def release(settings: Settings, log: Log, name: str, *, entry: str | None = None) -> ExitCode:
    """End the hold on the service `name` (every entry's too), or on one entry, and forget failed digests."""
    with run_lock(settings):
        service = _service(settings, log, name)
        # An entry gone from .env may still have a hold: it is released by its name as given.
        key = None if entry is None else (entry.removesuffix("TAGGED") + "HASHED"
                                          if entry.endswith("_IMAGE_TAGGED") else entry)
        path = state_path(settings)
        before = state_file.load(path, log)
        after, gone = released(before, state_file.service_key(service.folder), name, key)
        if after != before:
            state_file.save(path, after)
    if not gone:
        log.info(f"{name}{'' if key is None else ' ' + key}: nothing held and no failed digest; nothing to release")
        return ExitCode.OK
    for item in gone:
        log.info(f"{name}: released {item}")
    service_hold = after.service(state_file.service_key(service.folder), name).hold
    if key is not None and service_hold is not None:
        log.info(f"{name}: the service itself is still {hold_text(service_hold)}; `cipug release {name}` ends that")
    else:
        log.info(f"{name}: the next update run updates it when its tags point to newer images")
    return ExitCode.OK
