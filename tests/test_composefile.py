"""cipug.composefile: the compose services and their image lines, read without a YAML library, on files in
the shape of popular self-hosted projects' (tests/data/compose), and the refusals where it cannot be sure."""

from __future__ import annotations

from pathlib import Path

import pytest

from cipug.composefile import Unsure, parse, read, services_to_recreate

DATA = Path(__file__).parent / "data" / "compose"


def images(name: str) -> dict[str, str]:
    return {service: line.value for service, line in read(DATA / name).images.items()}


def test_each_service_image_is_found_and_nested_keys_are_not_taken_for_one():
    assert images("nextcloud.yml") == {"db": "mariadb:10.6", "redis": "redis:alpine", "app": "nextcloud"}
    assert images("gitea.yml") == {"server": "gitea/gitea:1.21"}
    assert images("vaultwarden.yml") == {"vaultwarden": "vaultwarden/server:latest"}  # CRLF line endings


def test_quotes_variables_digests_and_services_without_image():
    found = read(DATA / "immich.yml")
    assert found.images["immich-server"].variables == ("IMMICH_VERSION",)
    assert found.images["database"].value == "docker.io/tensorchord/pgvecto-rs:pg14-v0.2.0"
    assert found.images["database"].quote == '"'
    assert found.images["redis"].value.endswith("@sha256:2ba50e1ac3a0ea17b736ce9db2b0a9f6f8b85d4c27d5f5accc6a416d8f42c6d5")
    assert read(DATA / "paperless.yml").without_image == ("webserver",)


def test_the_value_span_covers_exactly_the_value_with_its_quotes():
    found = read(DATA / "gitea.yml")
    line = found.images["server"]
    text = found.lines[line.line - 1]
    assert text[line.start:line.end] == "'gitea/gitea:1.21'"
    assert text[:line.start] + "X" + text[line.end:] == "    image: X\n"


def test_services_using_a_variable():
    text = ("services:\n  web:\n    image: ${SERVICE_APP_IMAGE_HASHED}\n  worker:\n    image: $SERVICE_APP_IMAGE_HASHED\n"
            "  db:\n    image: ${SERVICE_APP_DB_IMAGE_HASHED:-postgres:16}\n")
    assert parse(text).services_using({"SERVICE_APP_IMAGE_HASHED"}) == ("web", "worker")
    assert parse(text).services_using({"SERVICE_APP_DB_IMAGE_HASHED"}) == ("db",)


def test_a_variable_no_image_uses_is_unsure(tmp_path):
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  web:\n    image: nginx:1\n")
    with pytest.raises(Unsure, match="no service's `image:` uses SERVICE_WEB_IMAGE_HASHED"):
        services_to_recreate(compose, {"SERVICE_WEB_IMAGE_HASHED"})


@pytest.mark.parametrize("text, line, reason", [
    ("x-a: &a\n  image: x\nservices:\n  web:\n    <<: *a\n", 5, "merges a mapping"),
    ("services:\n  web: &web\n    image: x\n", 2, "not an indented block"),
    ("services:\n  web:\n    image: *img\n", 3, "an anchor, alias"),
    ("services:\n  web:\n    extends:\n      file: common.yml\n      service: web\n", 3, "extends"),
    ("services:\n  web:\n    image: x\n---\nservices:\n  db:\n    image: y\n", 4, "several YAML documents"),
    ("services: {web: {image: x}}\n", 1, "flow style"),
    ("services:\n\tweb:\n", 2, "tab"),
    ("services:\n  web:\n    image: >\n      x\n", 3, "block"),
    ("services:\n  web:\n    image: \"a\\tb\"\n", 3, "escapes"),
    ("services:\n  web:\n    image: x\n    image: y\n", 4, "two `image:` keys"),
    ("services:\n  web:\n    image: x\n  web:\n    image: y\n", 4, "defined twice"),
    ("services:\n  web:\n    image:\n      x\n", 3, "no value on its line"),
], ids=["merge key", "anchor on service", "alias", "extends", "documents", "flow", "tab", "block scalar",
        "escapes", "two images", "twice", "value on the next line"])
def test_what_cannot_be_read_with_certainty_is_refused_with_the_reason_and_line(text, line, reason):
    with pytest.raises(Unsure) as raised:
        parse(text)
    assert raised.value.line == line and reason in raised.value.reason


def test_anchors_on_other_keys_and_a_leading_document_marker_are_fine():
    found = parse("---\nx-env: &env\n  TZ: UTC\nservices:\n  web:\n    image: nginx:1 # pinned later\n"
                  "    environment: *env\n")
    assert found.images["web"].value == "nginx:1"
    with pytest.raises(Unsure, match="merges"):
        read(DATA / "anchors.yml")
