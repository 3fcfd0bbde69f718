"""README's commands stay true: CI runs README's test command, word for word. README stays short
and points to docs/, every relative link lands on a file, and no page speaks of the project's
own history (its issues, its work sessions) instead of the user's task."""

import re

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
# The pages README must link, one per part of the job.
DOC_PAGES = [
    "curation.md",
    "training.md",
    "reading.md",
    "hub-and-space.md",
    "command-line.md",
    "benchmarks.md",
    "layout.md",
]
MAX_README_LINES = 200
# Markdown links and images, [text](target) and ![alt](target), and HTML src/href attributes.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|(?:src|href)=\"([^\"]+)\"")
HISTORY = re.compile(r"\bissues?[ -]?\d+|\bthe issue's\b|\bsessions?\b", re.I)


def pages() -> list:
    return [README, *sorted(DOCS.glob("*.md"))]


def fenced_after(heading: str) -> str:
    text = README.read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()


def links(text: str) -> list[tuple[str, str]]:
    """(file, anchor) for each link that points into this repository (code blocks left out: a
    shell line is not a link); the file is "" for an anchor in the same page."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    found = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        found.append((file, anchor))
    return found


def relative_links(text: str) -> list[str]:
    """The files the links point to, without their #anchors."""
    return [file for file, _ in links(text) if file]


def anchors(page) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.+)$", text, re.M)
    }


def test_ci_runs_the_readme_test_command():
    command = fenced_after("## Run the tests")
    ci = (REPO / ".ci" / "run").read_text()
    assert f"TEST_COMMAND='{command}'" in ci


def test_readme_names_the_configs_that_exist():
    text = README.read_text()
    for name in re.findall(r"configs/(\w+\.yaml)", text):
        assert (REPO / "configs" / name).is_file(), name


def test_readme_is_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_readme_links_every_docs_page():
    linked = set(relative_links(README.read_text()))
    for page in DOC_PAGES:
        assert (DOCS / page).is_file(), f"docs/{page} is missing"
        assert f"docs/{page}" in linked, f"README.md does not link docs/{page}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_files(page):
    for target in relative_links(page.read_text()):
        assert (page.parent / target).exists(), (
            f"{page.relative_to(REPO)} links {target}, which does not exist"
        )


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_anchors_between_the_pages_exist(page):
    """An #anchor into README or a docs page names one of its headings (other files' anchors
    are theirs to keep)."""
    ours = {p.resolve() for p in pages()}
    for file, anchor in links(page.read_text()):
        target = (page.parent / file).resolve() if file else page.resolve()
        if anchor and target in ours:
            assert anchor in anchors(target), (
                f"{page.relative_to(REPO)} links {file}#{anchor}, no such heading"
            )


def product_files() -> list:
    """What a user runs and reads besides the docs: the package, the configs, the cards, the
    Space and the benchmarks with their results (dated entries, without the project's history)."""
    return sorted(
        [*(REPO / "pricer").rglob("*.py"), *(REPO / "configs").glob("*.yaml"), *(REPO / "cards").glob("*.md"),
         *(REPO / "space").glob("*.py"), *(REPO / "space").glob("*.md"), *(REPO / "benchmarks").glob("*.py"),
         *(REPO / "benchmarks").glob("*.md")]
    )  # fmt: skip


@pytest.mark.parametrize("page", pages() + product_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_project_history(page):
    for number, line in enumerate(page.read_text().splitlines(), 1):
        assert not HISTORY.search(line), f"{page.relative_to(REPO)}:{number}: {line.strip()}"


def test_the_checks_can_fail():
    """The link, history and length checks see what they must refuse."""
    text = "see [a](docs/nope.md#x), ![b](img.png), [c](https://x.org), [d](#here)\n```\n[e](f.md)\n```"
    assert relative_links(text) == ["docs/nope.md", "img.png"]
    assert links(text)[-1] == ("", "here")
    assert relative_links('<img src="space/shot.png" width="9">') == ["space/shot.png"]
    assert HISTORY.search("as issue 8 chose") and HISTORY.search("this Session's code")
    assert HISTORY.search("the issue-7 ratios") and HISTORY.search("the issue's 10% is missed")
    assert not HISTORY.search("the issue is the base model's precision")
    assert "the-space-try-the-model-in-a-browser" in anchors(DOCS / "hub-and-space.md")
    assert "run-the-tests-a-fresh-cpu-machine-offline" in anchors(README)


def test_the_readmes_pricer_commands_parse_as_written(tmp_path, capsys):
    """Each `python -m pricer` line of README's code blocks, the quick try's online and offline
    ones included, is a command pricer accepts (its options exist and are in range)."""
    import shlex

    from pricer.cli.main import main

    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = [line for block in blocks for line in block.splitlines() if line.startswith("python -m pricer ")]
    assert len(lines) >= 3
    gguf = tmp_path / "SmolLM2.gguf"
    gguf.write_bytes(b"GGUF")
    for line in lines:
        line = line.replace("$GGUF", str(gguf)).replace("$SAMPLE", str(tmp_path))
        with pytest.raises(SystemExit) as stop:
            main([*shlex.split(line)[3:], "--print_config"])
        assert stop.value.code == 0, (line, capsys.readouterr().err)
        capsys.readouterr()
