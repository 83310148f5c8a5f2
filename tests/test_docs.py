"""The docs say what the code does: every command, option and grid.yaml key is documented, and the
README's grid.yaml example still parses (no database needed)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from ctq import config
from ctq.cli import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def _mentioned(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_every_command_and_option_is_in_the_readme():
    missing = []
    for path, command in _commands(main):
        if not _mentioned(README, "ctq " + " ".join(path)):
            missing.append("ctq " + " ".join(path))
        for param in command.params:
            flags = [o for o in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])] if o.startswith("-")]
            if flags and not any(_mentioned(README, flag) for flag in flags):
                missing.append(f"ctq {' '.join(path)} {flags[0]}")
    assert not missing, f"undocumented in README.md: {', '.join(missing)}"


def test_every_grid_yaml_key_is_in_the_reference():
    """The grid.yaml reference is ctq.config's docstring (what `ctq schema` describes too)."""
    tables = {"top": config._TOP_KEYS, "data": config._DATA_KEYS, "feature": config._FEATURE_KEYS,
              "model": config._MODEL_KEYS, "search": config._SEARCH_KEYS, "space": config.SPACE_KEYS,
              "range": config._RANGE_KEYS,
              "layer": {k for kind in config._LAYER_KINDS for k in (kind, *config._LAYER_OPTIONS[kind])}}
    missing = [f"{section}.{key}" for section, keys in tables.items() for key in keys
               if not re.search(rf"(?<![\w-]){re.escape(key)}\s*:", config.__doc__)]
    assert not missing, f"grid.yaml keys without a line in ctq.config's reference: {missing}"


@pytest.mark.parametrize("block", [b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if "\nmodels:" in b][:1])
def test_the_readme_grid_yaml_parses(block):
    cfg = config.parse_config(block, source_path="README.md", base_dir=str(REPO / "examples"))
    assert cfg.data.features and cfg.architectures
