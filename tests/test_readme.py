"""README is what users read: its settings and exit-code tables must say what the code does."""

import re
from pathlib import Path

from cipug.settings import SETTINGS
from cipug.errors import ExitCode

README = (Path(__file__).parent.parent / "README.md").read_text()


def table_rows(header: str) -> dict[str, str]:
    """First column → second column of the markdown table under the line starting with `header`."""
    start = README.index(header)
    rows = {}
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1]
    return rows


def test_settings_table_lists_every_setting_with_its_default():
    rows = table_rows("| name | default | meaning |")
    assert list(rows) == [setting.name for setting in SETTINGS]
    for setting in SETTINGS:
        if setting.default is None:
            assert rows[setting.name] == "required"
        elif callable(setting.default):
            assert rows[setting.name] == "see meaning"
        elif setting.default == "":
            assert rows[setting.name] == "empty"
        else:
            assert rows[setting.name] == f"`{setting.default}`"


def test_exit_code_table_matches_the_code():
    rows = table_rows("| code | meaning |")
    assert sorted(int(code) for code in rows) == sorted(ExitCode)


def test_every_cipug_setting_mentioned_in_readme_exists():
    names = {setting.name for setting in SETTINGS} | {"CONFIG_FILE"}
    # CIPUG_VM_* steer the VM test tier, not cipug.
    mentioned = {name for name in re.findall(r"CIPUG_([A-Z_]+[A-Z])", README) if not name.startswith("VM_")}
    assert mentioned <= names


def test_exit_code_table_says_what_each_code_describes():
    rows = table_rows("| code | meaning |")
    assert {int(code): meaning.replace("`", "") for code, meaning in rows.items()} == {
        code.value: code.description.replace("`", "") for code in ExitCode}


def test_architecture_section_names_every_module_and_only_those():
    section = README[README.index("## Architecture"):README.index("## Running the tests")]
    rows = dict(table_rows_in(section))
    package = Path(__file__).parent.parent / "cipug"
    modules = {path.relative_to(package.parent).as_posix() for path in package.rglob("*.py")
               if path.name not in ("__init__.py", "__main__.py")}
    named = set()
    for first, text in rows.items():
        if first.endswith("/"):
            named |= {first + name for name in re.findall(r"`([a-z_]+\.py)`", text)}
        else:
            named.add(first)
    assert named == modules


def table_rows_in(text: str) -> list[tuple[str, str]]:
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
             if line.startswith("| `")]
    return [(row[0].strip("`"), row[1]) for row in cells]
