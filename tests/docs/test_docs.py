"""Every code block of README.md and docs/*.md that is meant to run, run against a real server.

The convention is in :mod:`tests.docs.blocks` and docs/testing.md: runnable blocks run unless
marked ``<!-- doc-test: skip (why) -->``; a block the test cannot place fails it. Each
document's blocks run in order, in one shell session of their own, against a ``treadle serve``
of their own (see :mod:`tests.docs.session`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.blocks import ROOT, Block, blocks, documents
from tests.docs.session import Server, Session, console_script, serve

DOCUMENTS = documents()
RUNNABLE = [p for p in DOCUMENTS if any(b.action == "run" for b in blocks(p))]


def _name(path: Path) -> str:
    return path.name if path.name == "README.md" else f"docs/{path.name}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=[_name(p) for p in DOCUMENTS])
def test_every_block_is_run_or_marked(path: Path) -> None:
    wrong = [f"{b.where}: {b.argument}" for b in blocks(path) if b.action == "error"]
    assert not wrong, "blocks the doc test cannot place:\n" + "\n".join(wrong)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", RUNNABLE, ids=[_name(p) for p in RUNNABLE])
def test_the_blocks_of_a_document_run(path: Path, tmp_path: Path) -> None:
    todo = [b for b in blocks(path) if b.action in ("run", "file")]
    with serve(tmp_path) as server:
        session = Session(server, tmp_path)
        for block in todo:
            session.do(block)


def test_the_convention_catches_unplaced_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```\nno language\n```\n"
        "```fortran\nunknown\n```\n"
        "<!-- doc-test: skip () -->\n```bash\nno reason\n```\n"
        "<!-- doc-test: skip (needs a cluster) -->\n```bash\nkubectl apply\n```\n"
        "<!-- doc-test: file wf.py -->\n```python\nX = 1\n```\n"
        "```console\n$ treadle workflows list\n```\n"
        "```json\n{}\n```\n"
    )
    found = [(b.line, b.action, b.argument) for b in blocks(doc)]
    assert [(line, action) for line, action, _ in found] == [
        (1, "error"), (4, "error"), (8, "error"), (12, "skip"), (16, "file"), (19, "run"),
        (22, "display"),
    ]  # fmt: skip
    assert found[3][2] == "needs a cluster" and found[4][2] == "wf.py"


def test_a_console_transcript_checks_each_exit_status(tmp_path: Path) -> None:
    text = "$ true\nok\n$ false\ntreadle: error: no\n$ echo $?\n1\n"
    block = Block(tmp_path / "doc.md", 3, "console", text, "run")
    server = Server("http://127.0.0.1:1", "tdla_x", "tdl_x", tmp_path / "log")
    server.log.write_text("")
    script = console_script(block, text)
    assert "doc.md:6" in script and script.count("-ne 0") == 1 and script.count("-eq 0") == 2
    session = Session(server, tmp_path)
    session.do(block)
    failing = Block(block.path, 9, "console", "$ false\n", "run")
    with pytest.raises(AssertionError, match=r"doc\.md:9: the console block failed"):
        session.do(failing)


@pytest.mark.parametrize("name", ["cli.md", "sdk.md"])
def test_the_copies_of_the_readmes_workflow_are_the_readmes(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    written = readme.split("cat > checkout.py <<'PY'\n", 1)[1].split("\nPY\n", 1)[0] + "\n"
    copies = [b.text for b in blocks(ROOT / "docs" / name) if b.argument == "checkout.py"]
    assert copies == [written], f"docs/{name} says it deploys the README's checkout.py"
