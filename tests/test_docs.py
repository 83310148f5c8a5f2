"""The docs say what the code does (no database needed, a few seconds): every command, option and
grid.yaml key is documented; docs/cli.md and docs/grid-yaml.md are what docs/generate.py writes
today (so a new option or key without `make docs` fails); every relative link in the README and
docs/ reaches its file and heading; every documented grid.yaml example and every examples/*.yaml
the docs name still parses; the README links what a new user looked for (issue 20)."""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import click
import pytest

from ctq import config, errors
from ctq.cli import main

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = (REPO / "README.md").read_text()
PAGES = {p.relative_to(REPO).as_posix(): p.read_text()
         for p in [REPO / "README.md", REPO / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))] if p.exists()}
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


@functools.cache
def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def _mentioned(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_every_command_and_option_is_in_the_command_reference():
    reference = (DOCS / "cli.md").read_text()
    missing = []
    for path, command in _commands(main):
        if not re.search(rf"^## ctq {re.escape(' '.join(path))}$", reference, re.M):
            missing.append("ctq " + " ".join(path))
        for param in command.params:
            flags = [o for o in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])] if o.startswith("-")]
            if flags and not any(_mentioned(reference, flag) for flag in flags):
                missing.append(f"ctq {' '.join(path)} {flags[0]}")
    assert not missing, f"undocumented in docs/cli.md: {', '.join(missing)} (run: make docs)"


def _key_tables() -> dict:
    from ctq.schema import keys

    tables: dict[str, list[str]] = {}
    for prefix, key, _ in keys():
        tables.setdefault(prefix or "top", []).append(key)
    return tables


def test_every_grid_yaml_key_is_in_the_reference():
    """The grid.yaml reference is ctq.config's docstring (what `ctq schema` describes too), and
    docs/grid-yaml.md shows it with a table of every key."""
    page = (DOCS / "grid-yaml.md").read_text()
    missing = [f"{section}.{key}" for section, keys in _key_tables().items() for key in keys
               if not re.search(rf"(?<![\w-]){re.escape(key)}\s*:", config.__doc__)]
    assert not missing, f"grid.yaml keys without a line in ctq.config's reference: {missing}"
    unlisted = [f"{section}.{key}" for section, keys in _key_tables().items() for key in keys
                if not re.search(rf"^\| `[^`]*\b{re.escape(key)}` \|", page, re.M)]
    assert not unlisted, f"grid.yaml keys missing from docs/grid-yaml.md's table: {unlisted} (run: make docs)"


@pytest.mark.parametrize("name", ["cli.md", "grid-yaml.md"])
def test_the_generated_pages_are_current(name):
    generator = _generator()
    today = generator.PAGES[name]()
    assert (DOCS / name).read_text() == today, f"docs/{name} is not what the code says today: run `make docs`"


def test_the_exit_codes_are_the_errors_codes():
    """docs/cli.md's table (and ctq --help) come from ctq.errors.EXIT_CODES: every exit code an
    error can carry is in it, and ctq --help shows each."""
    documented = {code for code, _, _ in errors.EXIT_CODES}
    classes, todo = set(), [errors.CtqError]
    while todo:
        cls = todo.pop()
        classes.add(cls)
        todo.extend(cls.__subclasses__())
    assert {cls.exit_code for cls in classes} <= documented
    from ctq.cli import EPILOG
    for code, meaning, _ in errors.EXIT_CODES:
        assert re.search(rf"^  {code} +{re.escape(meaning.split()[0])}", EPILOG, re.M), code


def _anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a page (docs/generate.py's rule, which cli.md's
    table of contents uses too)."""
    anchor = _generator()._anchor
    return {anchor(m[1].strip()) for m in re.finditer(r"^#{1,6} (.+)$", FENCE.sub("", text), re.M)}


def _links(text: str):
    for m in re.finditer(r"\]\(([^)\s]+)\)", FENCE.sub("", re.sub(r"`[^`\n]*`", "", text))):
        target = m[1]
        if not re.match(r"[a-z]+:", target):  # http:, https:, mailto:: not checked here
            yield target


def test_every_relative_link_reaches_its_file_and_heading():
    broken = []
    for page, text in PAGES.items():
        base = (REPO / page).parent
        for target in _links(text):
            path, _, anchor = target.partition("#")
            file = (base / path).resolve() if path else REPO / page
            if not file.exists():
                broken.append(f"{page}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
                broken.append(f"{page}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme_or_the_docs():
    linked = {(REPO / page).parent.joinpath(t.partition("#")[0]).resolve()
              for page, text in PAGES.items() for t in _links(text) if t.partition("#")[0]}
    orphans = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs pages no page links to: {orphans}"


def test_the_readme_links_what_a_new_user_looked_for():
    """Issue 20: a new user, given only the README, could not find these; each is one link away."""
    wanted = {
        "the warm-up's cost": "docs/tutorial.md#the-warm-up-what-it-is-and-what-it-costs",
        "which utilization figure to trust": "docs/how-it-works.md#utilization-which-figure-to-trust",
        "the validation set's size (and ctq validation)": "docs/tutorial.md#the-validation-set-and-its-size",
        "exit codes": "docs/cli.md#exit-codes",
        "the --json contract": "docs/cli.md#the---json-contract",
        "features: all with exclude, and the case rule of column names": "docs/grid-yaml.md#file-format",
        "the connections a run needs": "docs/administration.md#connections-segments--2",
    }
    links = set(_links(README))
    missing = [what for what, target in wanted.items() if target not in links]
    assert not missing, f"README.md does not link: {missing}"
    assert "ctq validation" in README and "features: all" in README


def test_the_connection_count_is_the_doctors():
    """ctq doctor checks max_connections against segments + N; the docs state that N, once."""
    doctor = (REPO / "ctq" / "doctor.py").read_text()
    n = re.search(r"need = segments \+ (\d+)", doctor)[1]
    assert f"(a run uses segments + {n})" in doctor
    stated = {page: re.findall(r"segments \+ (\d)", FENCE.sub("", text)) for page, text in PAGES.items()}
    assert {x for found in stated.values() for x in found} == {n}, stated


def _yaml_blocks():
    for page, text in PAGES.items():
        for block in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            if re.search(r"^models:", block, re.M):
                yield pytest.param(page, block, id=f"{page}:{block.splitlines()[0]}")


@pytest.fixture
def without_keras(monkeypatch):
    """The grid.yaml rules without Keras' deserialization of keras_json files: importing Keras takes
    seconds, and tests/test_config.py and test_features.py already load every example and the
    reference's own example with it."""
    monkeypatch.setattr(config, "_keras_cannot_load", lambda doc: None)


@pytest.mark.parametrize("page,block", list(_yaml_blocks()))
def test_every_documented_grid_yaml_parses(page, block, without_keras):
    cfg = config.parse_config(block, source_path=page, base_dir=str(REPO / "examples"))
    assert (cfg.data.features or cfg.data.all_features) and cfg.architectures


def _fragments():
    """```yaml blocks that are part of a grid.yaml (a search:, a warm_start: ...), not a whole one."""
    for page, text in PAGES.items():
        for block in re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            if not re.search(r"^models:", block, re.M):
                yield pytest.param(page, block, id=f"{page}:{' '.join(block.split()[:3])}")


@pytest.mark.parametrize("page,block", list(_fragments()))
def test_every_documented_grid_yaml_fragment_parses_in_the_readmes_grid(page, block, without_keras):
    """A fragment put into the README's grid (successive halving's max_epochs replacing epochs)."""
    import yaml

    readme = next(b for p, b in (x.values for x in _yaml_blocks()) if p == "README.md")
    doc = {**yaml.safe_load(readme), **yaml.safe_load(block)}
    if doc.get("search", {}).get("method") in ("asha", "hyperband"):
        doc.pop("epochs")
    config.parse_config(yaml.safe_dump(doc), source_path=page, base_dir=str(REPO / "examples"))


def test_the_readme_has_a_grid_yaml():
    assert any(p == "README.md" for p, _ in (x.values for x in _yaml_blocks()))


EXAMPLES = sorted({m for text in PAGES.values() for m in re.findall(r"\bexamples/[\w-]+\.yaml\b", text)})


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_the_docs_name_parses(example, without_keras):
    cfg = config.load_config(REPO / example)
    assert cfg.architectures or cfg.search
