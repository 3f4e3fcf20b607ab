"""The documentation keeps up with the code: every setting is in the README's configuration
table, and every CLI command is documented."""

from __future__ import annotations

import re
from pathlib import Path

from bot.cli.main import build_parser
from bot.core.config import Settings, env_var

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    rows = [line for line in table.splitlines() if line.startswith("| `SINCHBOT_")]
    documented = set(re.findall(r"`(SINCHBOT_[A-Z_]+)`", "\n".join(rows)))
    missing = {env_var(name) for name in Settings.model_fields} - documented
    assert not missing, f"README's configuration table lacks {sorted(missing)}"


def test_every_command_is_in_docs_cli() -> None:
    cli = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    missing = [
        name for name in commands if f"| `{name}" not in cli and f"sinchbot {name}" not in cli
    ]
    assert not missing, f"docs/cli.md does not document {missing}"
