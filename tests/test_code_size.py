"""The code stays readable in pieces: no module in src/ or benchmarks/ over 400 lines, no
function or method over 50, and no private name (`_name`) imported from another module in src/
(a private name is its module's own business)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "src").rglob("*.py"))
BENCHMARKS = sorted((ROOT / "benchmarks").rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def long_functions(path: Path) -> list[str]:
    """Functions and methods of `path` over MAX_FUNCTION_LINES, `def` to last line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{relative(path)}:{node.lineno} {node.name} ({lines} lines)")
    return out


def private_imports(path: Path) -> list[str]:
    """`from resnorm.x import _name` (or a relative import of one) in `path`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").split(".")[0] == "resnorm"):
            out += [f"{relative(path)}:{node.lineno} {a.name} from {node.module}"
                    for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_module_is_over_400_lines():
    assert ROOT / "benchmarks" / "gpu_check.py" in BENCHMARKS
    sizes = {relative(p): len(p.read_text().splitlines()) for p in SOURCES + BENCHMARKS}
    long = [f"{name} ({n} lines)" for name, n in sizes.items() if n > MAX_MODULE_LINES]
    assert not long, "modules over 400 lines: " + "; ".join(long)


def test_no_function_is_over_50_lines():
    assert len(SOURCES) > 50  # the sources were found
    long = [f for path in SOURCES + BENCHMARKS for f in long_functions(path)]
    assert not long, "functions over 50 lines: " + "; ".join(long)


def test_no_private_name_is_imported_across_modules():
    imported = [i for path in SOURCES for i in private_imports(path)]
    assert not imported, "private names imported: " + "; ".join(imported)


def test_the_checks_catch_what_they_should(tmp_path):
    def function(name: str, lines: int, indent: str = "") -> str:
        return (f"{indent}def {name}():\n"
                + "".join(f"{indent}    x = {i}\n" for i in range(lines - 1)))
    source = tmp_path / "example.py"
    source.write_text("from resnorm.fileio import _x, __version__, read_json\n"
                      "from .sibling import _y\nfrom numpy import _z\n"
                      + function("fits", MAX_FUNCTION_LINES)
                      + "class A:\n" + function("too_long", MAX_FUNCTION_LINES + 1, "    "))
    assert long_functions(source) == [
        f"example.py:{5 + MAX_FUNCTION_LINES} too_long ({MAX_FUNCTION_LINES + 1} lines)"]
    assert private_imports(source) == ["example.py:1 _x from resnorm.fileio",
                                       "example.py:2 _y from sibling"]
