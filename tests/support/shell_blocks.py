"""The commands of a Markdown page's ```bash blocks, as a shell would split them.

Each command is a list of words (quotes removed, comments dropped, placeholders such as ``<folder>`` kept as one
word), with the here-documents it reads and where it stands in the page; ``&&``, ``||``, ``;`` and ``|`` end a
command as in the shell. Enough of the shell for documentation: no expansions, no subshells.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
PLACEHOLDER = re.compile(r"<([a-z][a-z -]*)>")  # <folder>, <older commit>: a word the reader fills in
SEPARATORS = {"&&", "||", ";", "|"}


@dataclass
class Command:
    page: str  # the page's path from the repository root
    line: int  # 1-based line of the page where the command starts
    words: list[str]
    heredocs: list[str] = field(default_factory=list)  # the text each here-document feeds the command

    @property
    def program(self) -> str:
        return self.words[0]

    @property
    def label(self) -> str:
        return f"{self.page}:{self.line}: {' '.join(self.words)[:70]}"


def _logical_lines(block: str) -> list[tuple[int, str, list[str]]]:
    """(offset of the first line, the text, its here-documents): a line with an open quote or a trailing
    backslash goes on with the next; a here-document's body is taken out of the text."""
    lines = block.split("\n")
    out: list[tuple[int, str, list[str]]] = []
    i = 0
    while i < len(lines):
        start, text = i, lines[i]
        i += 1
        while True:
            if text.endswith("\\"):
                text = text[:-1] + " " + lines[i]
                i += 1
                continue
            try:
                shlex.split(PLACEHOLDER.sub("PLACEHOLDER", text), comments=True)
                break
            except ValueError:  # an open quote: python -c "..." over several lines
                text += "\n" + lines[i]
                i += 1
        bodies = []
        for match in HEREDOC.finditer(text):
            end = lines.index(match.group(2), i)
            bodies.append("\n".join(lines[i:end]) + "\n")
            i = end + 1
        text = HEREDOC.sub("", text)
        out.append((start, text, bodies))
    return out


def _split(text: str) -> list[list[str]]:
    """The words of each command on one logical line (quotes removed, comments dropped)."""
    placeholders: list[str] = []

    def keep(match: re.Match[str]) -> str:
        placeholders.append(match.group(0))
        return f"PLACEHOLDER{len(placeholders) - 1}X"

    lexer = shlex.shlex(PLACEHOLDER.sub(keep, text), posix=True, punctuation_chars=";&|>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = [[]]
    words = list(lexer)
    skip_next = False
    for word in words:
        if skip_next:  # the file of a redirection (cat > file)
            skip_next = False
            commands[-1].append(">" + word)
            continue
        if word in SEPARATORS:
            commands.append([])
        elif word in {">", ">>"}:
            skip_next = True
        else:
            commands[-1].append(re.sub(r"PLACEHOLDER(\d+)X", lambda m: placeholders[int(m.group(1))], word))
    return [command for command in commands if command]


def page_commands(repo: Path, page: Path) -> list[Command]:
    """Every command of every ```bash block of one page."""
    text = page.read_text(encoding="utf-8")
    name = page.relative_to(repo).as_posix()
    commands: list[Command] = []
    for block in BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        for offset, line, heredocs in _logical_lines(block.group(1).rstrip("\n")):
            for words in _split(line):
                commands.append(Command(name, first_line + offset, words, heredocs if words[0] == "cat" else []))
    return commands
