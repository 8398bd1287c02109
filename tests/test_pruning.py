"""cipug.pruning: which images pruning leaves, and the keep tags; the prune itself with the container tool faked."""

from __future__ import annotations

import io

from cipug.files import history
from cipug.log import Log
from cipug.programs.compose import ServiceControl
from cipug.programs.process import Runner
from cipug.pruning import keep_tag, pins_to_keep
from cipug.settings import load_settings
from tests.support.fakestack import DIGEST_B, PIN_A, PIN_B, PIN_C, record

PIN_D = "docker.io/library/nginx@sha256:" + "d" * 64


def test_the_keep_tag_names_the_repository_and_the_digest():
    assert keep_tag(PIN_A) == f"docker.io/library/nginx:cipug-keep-{'a' * 16}"
    assert keep_tag("127.0.0.1:5000/app@" + DIGEST_B) == f"127.0.0.1:5000/app:cipug-keep-{'b' * 16}"


def test_each_entry_keeps_its_pin_and_its_last_earlier_ones():
    records = [record(None, PIN_A), record(PIN_A, PIN_B), record(PIN_B, PIN_C),
               record(None, PIN_D, entry="SERVICE_DB_IMAGE_HASHED")]
    assert pins_to_keep(records, 1) == {PIN_C, PIN_B, PIN_D}
    assert pins_to_keep(records, 2) == {PIN_C, PIN_B, PIN_A, PIN_D}
    assert pins_to_keep(records, 0) == {PIN_C, PIN_D}


def test_a_rollback_counts_and_an_update_that_did_not_come_up_does_not():
    dead = record(PIN_B, PIN_D, outcome=history.ROLLED_BACK)._replace(did_not_come_up=True)
    rollback = record(PIN_B, PIN_A, outcome=history.ROLLED_BACK)
    failed = record(PIN_A, PIN_C, outcome=history.FAILED)
    records = [record(None, PIN_A), record(PIN_A, PIN_B), dead, rollback, failed]
    # Back on A after the rollback; B is the pin it ran before.
    assert pins_to_keep(records, 1) == {PIN_A, PIN_B}


def test_the_prune_tags_what_is_kept_and_untags_what_is_not_any_more(fp, tmp_path):
    settings = load_settings({"CIPUG_SERVICES_ROOT": str(tmp_path), "HOME": str(tmp_path)}, cwd=tmp_path)
    fp.register(["podman", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], stdout=(
        f"docker.io/library/nginx:cipug-keep-{'a' * 16}\nnginx:cipug-keep-{'c' * 16}\ndocker.io/library/nginx:1\n"))
    fp.register(["podman", "tag", PIN_B, keep_tag(PIN_B)], returncode=125, stderr="image not known")
    fp.register(["podman", "rmi", f"nginx:cipug-keep-{'c' * 16}"], returncode=2, stderr="image is in use")
    fp.register(["podman", "image", "prune", "-f"])
    control = ServiceControl(settings, Runner(Log(0, io.StringIO(), io.StringIO())))

    warnings = control.prune_images({PIN_A, PIN_B})

    # A is tagged already, B's image is not here (nothing to keep), C is kept no more.
    assert [call[1] for call in fp.calls] == ["image", "tag", "rmi", "image"]
    assert warnings == [f"`podman rmi nginx:cipug-keep-{'c' * 16}` exited 2: image is in use"]
