"""The report's document model: sections of paragraphs, sub-headings, bullet lists of plain
text, tables and figures. `render` turns one into HTML and into Markdown."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union


@dataclass
class Bold:
    text: str


Cell = Union[str, Bold]


@dataclass
class Para:
    text: str


@dataclass
class Sub:
    title: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass
class Img:
    path: Path
    caption: str
    narrow: bool = False  # small plots are shown at half width in the HTML


Block = Union[Para, Sub, Bullets, Table, Img]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Section":
        self.blocks.extend(blocks)
        return self


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]
    root: Path  # the study folder: figure paths are shown relative to it in Markdown
    summary: dict = field(default_factory=dict)  # the statistics the report states
