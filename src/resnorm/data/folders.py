"""Find the split and class folders of an image-folder dataset.

The layout is torchvision's ImageFolder convention, one level up:

    ROOT/train/<Class>/*.jpg    ROOT/valid/<Class>/*.jpg    (ROOT/test/<Class>/*.jpg)

The layouts in which people have the Indian Birds dataset all load: `train/` + `valid/` (the
Kaggle original), `train/` + `val/` (or `validation/`), either with a `test/`, and `train/` +
`test/`. The splits are named "train", "val" and "test" whatever their folders are called
(`Layout.split_dirs` names the folders). With `train/` + `test/`, `test/` is the only split
besides train, so it is the validation split "val" (it chooses the best epoch, and its scores
are labelled so) and `split_dirs["val"]` is the folder `test`. File names inside class folders
are free.

Class index = position of the folder name in sorted order. Hidden files and files without an
image extension are ignored and listed, never decoded. Anything else is one UsageError line.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from resnorm.errors import UsageError

__all__ = ["Layout", "discover", "IMAGE_EXTENSIONS", "SPLIT_FOLDERS"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
# split name -> folder names accepted for it, in order of preference
SPLIT_FOLDERS = {"train": ("train",), "val": ("valid", "val", "validation"),
                 "test": ("test",)}
EXPECTED = "expected train/<Class>/* and valid/<Class>/* (or val/), optionally test/<Class>/*"


@dataclass
class Layout:
    """What `discover` found: class names, labelled files per split, and ignored files."""

    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[Path, int]]]
    ignored: list[Path] = field(default_factory=list)
    split_dirs: dict[str, Path] = field(default_factory=dict)

    def files(self):
        """Yield (split, path, label) for every candidate image, in a fixed order."""
        for split, items in self.splits.items():
            for path, label in items:
                yield split, path, label

    def relpath(self, path: Path) -> str:
        """`path` relative to the root with forward slashes, e.g. 'valid/Hoopoe/01.jpg'."""
        return path.relative_to(self.root).as_posix()

    def fingerprint(self) -> str:
        """A hash of every candidate file's relative path, size and mtime.

        Cheap (one stat per file, no reads), so an unchanged dataset is recognised without
        hashing its contents.
        """
        digest = hashlib.sha256()
        digest.update("\0".join(self.classes).encode())
        for split, path, label in self.files():
            st = path.stat()
            digest.update(f"{split}\0{self.relpath(path)}\0{label}\0{st.st_size}\0"
                          f"{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()


def discover(root: str | os.PathLike) -> Layout:
    """Scan `root` for split folders, each holding one folder per class.

    Raises `UsageError` (one line) when the root or a required split is missing, when the
    splits disagree on the class set, or when a class folder holds no image.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise UsageError(f"dataset root {root} is not a folder")
    split_dirs = _find_split_dirs(root)
    classes = _agreed_classes({d.name: _class_dirs(d) for d in split_dirs.values()})

    splits: dict[str, list[tuple[Path, int]]] = {}
    ignored: list[Path] = []
    empty: list[str] = []
    for split, split_dir in split_dirs.items():
        ignored += [p for p in sorted(split_dir.iterdir()) if not p.is_dir()]
        splits[split] = []
        for label, name in enumerate(classes):
            images, skipped = _list_images(split_dir / name)
            ignored += skipped
            if not images:
                empty.append(f"{split_dir.name}/{name}")
            splits[split] += [(p, label) for p in images]
    if empty:
        raise UsageError(f"class folders without images: {', '.join(empty)}")
    return Layout(root, classes, splits, ignored, split_dirs)


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        present = [root / n for n in names if (root / n).is_dir()]
        if len(present) > 1:
            raise UsageError(f"{root} has both {' and '.join(p.name + '/' for p in present)}; "
                             f"keep one as the {split} split")
        if present:
            found[split] = present[0]
    if "train" not in found:
        raise UsageError(_no_train_text(root))
    if "val" not in found:
        if "test" not in found:
            raise UsageError(f"{root} has train/ but no valid/, val/ or test/ folder to choose "
                             f"epochs on ({EXPECTED})")
        found["val"] = found.pop("test")  # train/ + test/: test/ is the validation split
    return found


def _no_train_text(root: Path) -> str:
    """Why `root` is not a dataset root, and where the dataset may be instead."""
    subdirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not _hidden(p)]
    nested = [p for p in subdirs if (p / "train").is_dir()]
    if nested:
        return (f"{root} has no train/ folder, but {nested[0]} has: point --data at "
                f"{nested[0]}")
    splits = [p.name + "/" for p in subdirs
              if any(p.name in names for names in SPLIT_FOLDERS.values())]
    if splits:
        return f"{root} has {', '.join(splits)} but no train/ folder ({EXPECTED})"
    if any(_holds_images(p) for p in subdirs[:3]):
        return (f"{root} holds class folders ({subdirs[0].name}/, ...) but no split folders; "
                f"{EXPECTED}")
    return f"{root} has no train/ folder ({EXPECTED})"


def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir() if p.is_file())


def _class_dirs(split_dir: Path) -> list[str]:
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not _hidden(p))
    if not names:
        raise UsageError(f"{split_dir} holds no class folders")
    return names


def _agreed_classes(classes_per_folder: dict[str, list[str]]) -> list[str]:
    reference = classes_per_folder["train"]
    for split, names in classes_per_folder.items():
        only_train = sorted(set(reference) - set(names))
        only_here = sorted(set(names) - set(reference))
        if only_train or only_here:
            parts = []
            if only_train:
                parts.append(f"only in train: {', '.join(only_train)}")
            if only_here:
                parts.append(f"only in {split}: {', '.join(only_here)}")
            raise UsageError(f"train and {split} have different classes ({'; '.join(parts)})")
    return reference


def _list_images(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """Image files under `class_dir` (recursively, sorted) and the files ignored there."""
    images, ignored = [], []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if _hidden(path) or path.suffix.lower() not in IMAGE_EXTENSIONS:
                ignored.append(path)
            else:
                images.append(path)
    return images, ignored


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")
