"""The documentation holds together: every relative link of README.md and docs/*.md resolves (files and #anchors),
and README.md opens with the two commands that CI and newcomers run, right after their markers."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def anchors(path):
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = [line.lstrip('#').strip() for line in path.read_text().splitlines() if re.match(r'#{1,6} ', line)]
    return {re.sub(r'[^\w\- ]', '', h.lower()).replace(' ', '-') for h in headings}


def fenced_blocks(text):
    """(line number of the opening fence, the block's lines) of every fenced block."""
    blocks, lines, start = [], text.splitlines(), None
    for number, line in enumerate(lines):
        if line.startswith('```'):
            if start is None:
                start = number
            else:
                blocks.append((start, lines[start + 1:number]))
                start = None
    return blocks


@pytest.mark.parametrize('document', DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_every_relative_link_resolves(document):
    links = [link for link in LINK.findall(document.read_text()) if not re.match(r'[a-z]+:', link)]
    assert links or document.name != 'README.md'
    for link in links:
        target, _, anchor = link.partition('#')
        path = (document.parent / target).resolve() if target else document
        assert path.exists(), f'{document.name}: {link} -> {path} does not exist'
        if anchor:
            assert path.suffix == '.md' and anchor in anchors(path), f'{document.name}: no heading for {link}'


def test_the_two_commands_are_the_first_fenced_commands_right_after_their_markers():
    text = (REPO / 'README.md').read_text()
    lines = text.splitlines()
    blocks = fenced_blocks(text)
    for marker, block, words in (('<!-- demo-command -->', blocks[0], ['demo_data.py', 'extract_features.py',
                                                                       'task4b.py', 'requirements.txt']),
                                 ('<!-- test-command -->', blocks[1], ['pytest', 'requirements-dev.txt'])):
        start, body = block
        assert lines[start - 1] == marker, marker            # the fence follows the marker at once
        assert len(body) == 1 and all(word in body[0] for word in words), body
    assert sum(marker in text for marker in ('<!-- demo-command -->', '<!-- test-command -->')) == 2
    ci = (REPO / '.ci' / 'run').read_text()
    assert '<!-- test-command -->' in ci                     # the marker CI reads the command after


def test_readme_is_a_front_door_of_at_most_150_lines():
    assert len((REPO / 'README.md').read_text().splitlines()) <= 150
