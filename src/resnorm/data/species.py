"""The 25 species of the Indian Birds dataset as the synthetic stand-in draws them: body
shape, colour pattern and wing texture per class, loosely after the real birds, so that
similar species stay confusable (the two wagtails, the two kingfishers, the two lapwings...)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Species", "SPECIES", "GRADCAM_CLASSES"]


@dataclass(frozen=True)
class Species:
    """How a class is drawn. Lengths are in units of the body length; colours are hex."""

    body: str
    wing: str
    breast: str
    head: str
    beak: str = "#3a3a3a"
    tail: str | None = None          # default: wing colour
    legs: str = "#5a5048"
    pattern: str = "plain"           # wing texture: plain, bars, spots, streaks, stripes
    pattern_colour: str = "#202020"
    aspect: float = 0.55             # body height / length
    head_r: float = 0.2
    beak_len: float = 0.2
    beak_w: float = 0.5              # beak base height, in head radii
    tail_len: float = 0.45
    tail_angle: float = 10.0         # degrees above horizontal
    leg_len: float = 0.15
    neck: float = 0.0                # extra head height
    cap: str | None = None           # top of the head
    face: str | None = None          # patch in front of the eye (wattle, eye stripe, mask)
    crest: str | None = None
    tail_spots: str | None = None    # eye spots on the tail (peacock)


SPECIES: dict[str, Species] = {
    "Asian-Green-Bee-Eater": Species("#3fae49", "#2f9a3c", "#7fd06a", "#c9a23a", beak="#1c1c1c",
                                     beak_len=0.38, beak_w=0.3, tail_len=0.95, tail_angle=0,
                                     face="#111111"),
    "Brown-Headed-Barbet": Species("#5d9b3c", "#4f8c32", "#8b6a4a", "#7a5434", beak="#e0906a",
                                   beak_w=0.7, beak_len=0.16, tail_len=0.3, pattern="streaks",
                                   pattern_colour="#b49c7c", head_r=0.25),
    "Cattle-Egret": Species("#f2f2ee", "#e9e9e4", "#ffffff", "#e8b86a", beak="#f2c21b",
                            beak_len=0.32, beak_w=0.35, leg_len=0.55, legs="#6b5d2a",
                            tail_len=0.2, neck=0.15, head_r=0.16),
    "Common-Kingfisher": Species("#1d8fbf", "#1a7fb0", "#e07b2a", "#1d8fbf", beak="#151515",
                                 beak_len=0.45, beak_w=0.4, head_r=0.27, tail_len=0.18,
                                 pattern="spots", pattern_colour="#6fd3ff", face="#e07b2a"),
    "Common-Myna": Species("#6b4a33", "#5d3f2b", "#7a563c", "#1b1b1b", beak="#f0c419",
                           face="#f0c419", beak_len=0.17, tail_len=0.4, pattern="bars",
                           pattern_colour="#f4f1ea", legs="#e2b81a"),
    "Common-Rosefinch": Species("#9b6b55", "#8a5e4a", "#d8405a", "#cc3a52", beak="#8a7060",
                                beak_len=0.11, beak_w=0.7, pattern="streaks",
                                pattern_colour="#5a3d2e"),
    "Common-Tailorbird": Species("#8aa04a", "#7c9442", "#f1eee0", "#a8b860", beak="#4a3a30",
                                 cap="#c8642a", beak_len=0.22, beak_w=0.3, tail_len=0.55,
                                 tail_angle=55, aspect=0.5),
    "Coppersmith-Barbet": Species("#4f9e3a", "#478f34", "#d9e59a", "#4f9e3a", beak="#262626",
                                  cap="#e0262b", face="#f2d21b", beak_len=0.15, beak_w=0.7,
                                  pattern="streaks", pattern_colour="#2f6e28", head_r=0.25,
                                  tail_len=0.25),
    "Forest-Wagtail": Species("#7d7456", "#6d6548", "#f0ece0", "#7d7456", pattern="bars",
                              pattern_colour="#1a1a1a", beak_len=0.15, tail_len=0.7,
                              tail_angle=0, face="#1a1a1a", aspect=0.45),
    "Gray-Wagtail": Species("#7b8690", "#6d7780", "#f2d530", "#7b8690", tail="#222222",
                            beak_len=0.15, tail_len=0.9, tail_angle=0, aspect=0.42,
                            legs="#c9a58c", face="#f0f0f0"),
    "Hoopoe": Species("#d9975a", "#222222", "#e3aa72", "#d9975a", beak="#262626",
                      pattern="bars", pattern_colour="#f5f0e8", crest="#d9975a",
                      beak_len=0.38, beak_w=0.3, tail="#222222", tail_len=0.4),
    "House-Crow": Species("#1d1d1d", "#151515", "#2a2a2a", "#7a7a7a", beak="#0d0d0d",
                          beak_len=0.25, beak_w=0.6, tail_len=0.45, head_r=0.22,
                          cap="#111111"),
    "Indian-Grey-Hornbill": Species("#8d8d86", "#7d7d76", "#b5b5ac", "#8d8d86",
                                    beak="#2a2a2a", beak_len=0.48, beak_w=0.9,
                                    tail_len=0.85, tail_angle=0, pattern="bars",
                                    pattern_colour="#3d3d3a", cap="#5a5a55"),
    "Indian-Peacock": Species("#1f4fb8", "#a07a4a", "#1a3f9a", "#2058c8", beak="#9a9a90",
                              tail="#2f8f4a", tail_len=1.5, tail_angle=5, crest="#2058c8",
                              tail_spots="#1a2a80", neck=0.12, leg_len=0.25,
                              pattern="stripes", pattern_colour="#5a4028"),
    "Indian-Pitta": Species("#4d9a3a", "#3f8a30", "#e9d39a", "#d8b36a", beak="#2a2a2a",
                            face="#111111", cap="#8b6a2a", tail="#2d2d2d", tail_len=0.14,
                            aspect=0.7, pattern="spots", pattern_colour="#42b6e8",
                            leg_len=0.25, legs="#d8a890"),
    "Indian-Roller": Species("#4b7fa8", "#1f5fb0", "#b07a6a", "#4b8fb8", beak="#2a2a2a",
                             pattern="bars", pattern_colour="#63d0f0", beak_len=0.2,
                             beak_w=0.6, tail="#2f78c0", tail_len=0.5),
    "Jungle-Babbler": Species("#8e8270", "#80745f", "#a39a88", "#8e8270", beak="#e8dca0",
                              pattern="streaks", pattern_colour="#5d5446", tail_len=0.65,
                              tail_angle=20, beak_len=0.15, beak_w=0.6),
    "Northern-Lapwing": Species("#234a3a", "#1f4235", "#f4f4f0", "#1d1d1d", beak="#1a1a1a",
                                crest="#1d1d1d", face="#f4f4f0", beak_len=0.14,
                                leg_len=0.35, legs="#b07a6a", tail_len=0.25),
    "Red-Wattled-Lapwing": Species("#a08a62", "#937d56", "#f4f4f0", "#161616", beak="#d2202a",
                                   face="#e0262b", beak_len=0.18, leg_len=0.5,
                                   legs="#e8c41a", tail_len=0.25),
    "Ruddy-Shelduck": Species("#d9782f", "#cc6c28", "#d47431", "#efd8b5", beak="#1d1d1d",
                              tail="#1b1b1b", aspect=0.48, beak_len=0.2, beak_w=0.55,
                              pattern="bars", pattern_colour="#f4f1ea", tail_len=0.2,
                              leg_len=0.12, neck=0.1),
    "Rufous-Treepie": Species("#b5652a", "#8b8b86", "#c77a3c", "#2a2320", beak="#1d1d1d",
                              tail="#6f6f6a", tail_len=1.25, tail_angle=-5, pattern="bars",
                              pattern_colour="#f0f0ea", beak_w=0.6),
    "Sarus-Crane": Species("#9aa3aa", "#8b949b", "#a9b1b7", "#d8303a", beak="#6a6a60",
                           beak_len=0.38, beak_w=0.35, leg_len=0.85, neck=0.35,
                           tail_len=0.25, cap="#b8c0c4", legs="#d88a8a", head_r=0.15),
    "White-Breasted-Kingfisher": Species("#1f8fd0", "#1a7fc0", "#f6f6f6", "#7a3a1a",
                                         beak="#e0262b", beak_len=0.5, beak_w=0.55,
                                         head_r=0.27, tail="#1f8fd0", tail_len=0.35,
                                         legs="#e0262b"),
    "White-Breasted-Waterhen": Species("#3a3d40", "#2f3235", "#f8f8f8", "#f8f8f8",
                                       beak="#e3d21b", cap="#2a2c2e", face="#e0262b",
                                       beak_len=0.18, beak_w=0.6, leg_len=0.45,
                                       legs="#d8c21a", tail="#c87a3a", tail_len=0.2,
                                       tail_angle=40),
    "White-Wagtail": Species("#7a7d80", "#1a1a1a", "#f6f6f6", "#f6f6f6", tail="#1a1a1a",
                             cap="#1a1a1a", beak_len=0.15, tail_len=0.95, tail_angle=0,
                             aspect=0.42, pattern="bars", pattern_colour="#f6f6f6"),
}
assert len(SPECIES) == 25 and list(SPECIES) == sorted(SPECIES)

GRADCAM_CLASSES = ("Cattle-Egret", "Coppersmith-Barbet", "Indian-Peacock", "Red-Wattled-Lapwing",
                   "Ruddy-Shelduck", "White-Breasted-Kingfisher", "White-Breasted-Waterhen")
