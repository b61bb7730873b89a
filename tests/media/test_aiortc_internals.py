"""Private aiortc/aioice attributes are touched in aiortc_patch.py and aiortc_receive.py only;
no import cycles.

The check is syntactic (ast): any ``x._name`` or ``getattr/setattr/hasattr(x, "_name")``
whose object is not ``self``/``cls`` counts, since no module of the package reaches into a
private attribute of one of its own objects from outside that object.
"""

from __future__ import annotations

import ast
from pathlib import Path

import media

PACKAGE = Path(media.__file__).parent
ALLOWED = {"aiortc_patch.py", "aiortc_receive.py"}


def _is_private_attribute(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not (node.attr.startswith("__") and node.attr.endswith("__"))
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    )


def _is_private_by_name(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
        and node.args[1].value.startswith("_")
    )


def _private_reaches(tree: ast.AST) -> list[tuple[int, str]]:
    return [
        (node.lineno, ast.unparse(node))  # type: ignore[attr-defined]
        for node in ast.walk(tree)
        if _is_private_attribute(node) or _is_private_by_name(node)
    ]


def test_the_check_finds_what_it_looks_for() -> None:
    sample = ast.parse(
        "t._offerDirection\nself._mine\ngetattr(r, '_RTCRtpReceiver__x')\nobj.__class__\n"
    )
    assert [line for line, _ in _private_reaches(sample)] == [1, 3]


def test_private_aiortc_attributes_only_in_aiortc_patch() -> None:
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in ALLOWED:
            continue
        for line, text in _private_reaches(ast.parse(path.read_text(), str(path))):
            offenders.append(f"{path.name}:{line}: {text}")
    assert not offenders, (
        "move these behind a guarded helper in aiortc_patch.py or aiortc_receive.py:\n"
        + "\n".join(offenders)
    )


def _media_imports(path: Path) -> set[str]:
    """Modules of this package that ``path`` imports (under TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.module.startswith("media."):
                found.add(node.module.split(".")[2])
    return found


def test_session_does_not_import_room() -> None:
    """PeerSession reports through SessionCallbacks; the room <-> session cycle stays gone."""
    assert "room" not in _media_imports(PACKAGE / "session.py")


def test_no_import_cycle_in_the_media_package() -> None:
    graph = {p.stem: _media_imports(p) for p in PACKAGE.glob("*.py")}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " -> ".join([*visiting, module])
        visiting.append(module)
        for dep in sorted(graph.get(module, ())):
            visit(dep)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
