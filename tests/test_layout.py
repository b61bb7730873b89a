"""The import rules of docs/architecture.md ("Layout and import rules"), checked on the source.

Every ``import`` of the project's packages counts, function-level ones included:
1. no import cycle between modules;
2. the kernel imports nothing from the signaling framework, a feature or the composition root;
3. the signaling framework imports no feature and no composition-root module;
4. features never import the concrete namespace (``signaling.namespace``);
5. nothing outside ``rtc_server`` imports ``rtc_server``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "kernel"
FRAMEWORK = "signaling"
ROOT_PACKAGE = "rtc_server"
FEATURES = ("media", "recording", "annotation", "rehab_vision", "clinic")
PACKAGES = (KERNEL, FRAMEWORK, ROOT_PACKAGE, *FEATURES)
# signaling/extensions.py is the framework's public face for features: it re-exports the
# kernel's extension types, so features may import it (and the other signaling modules but
# the namespace itself)
CONCRETE_NAMESPACE = "signaling.namespace"
# none left: the media room <-> session cycle went with PeerSession's callbacks
KNOWN_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "node_modules" not in path.parts:
                found[_module_name(path)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` refers to (a module, or the package of an imported name)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_project(graph: dict[str, set[str]]) -> None:
    assert "kernel.rooms" in graph["signaling.namespace"]
    assert "signaling.namespace" in graph["rtc_server.app"]
    assert "kernel.records.tables" in graph["recording.tables"]
    assert len(graph) > 140


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    cycles = [c for c in _cycles(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not cycles, f"import cycles: {cycles}"


def test_kernel_uses_no_framework_feature_or_root(graph: dict[str, set[str]]) -> None:
    bad = sorted(
        (m, t)
        for m, targets in graph.items()
        if _in(m, KERNEL)
        for t in targets
        if not _in(t, KERNEL)
    )
    assert not bad, f"the kernel imports outside itself: {bad}"


def test_framework_imports_no_feature_or_root(graph: dict[str, set[str]]) -> None:
    bad = sorted(
        (m, t)
        for m, targets in graph.items()
        if _in(m, FRAMEWORK)
        for t in targets
        if not _in(t, KERNEL, FRAMEWORK)
    )
    assert not bad, f"signaling imports a feature or the root: {bad}"


def test_features_never_import_the_concrete_namespace(graph: dict[str, set[str]]) -> None:
    bad = sorted(
        (m, t)
        for m, targets in graph.items()
        if _in(m, *FEATURES)
        for t in targets
        if t == CONCRETE_NAMESPACE
    )
    assert not bad, f"features import signaling.namespace (use signaling.extensions): {bad}"


def test_only_the_root_imports_the_root(graph: dict[str, set[str]]) -> None:
    bad = sorted(
        (m, t)
        for m, targets in graph.items()
        if not _in(m, ROOT_PACKAGE)
        for t in targets
        if _in(t, ROOT_PACKAGE)
    )
    assert not bad, f"imports of rtc_server from outside it: {bad}"


def _host_members() -> set[str]:
    tree = ast.parse((ROOT / "kernel" / "extensions.py").read_text())
    host = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FeatureHost")
    members = {n.name for n in host.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    members |= {
        n.target.id
        for n in host.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    return members


def test_features_use_only_what_feature_host_declares() -> None:
    """A feature's `ns`/`host` is a FeatureHost: reaching past it (the namespace's `conns`,
    its Socket.IO server) would tie the feature to the concrete class again."""
    members = _host_members()
    assert {"add_handler", "registry", "claims_for"} <= members
    modules = _modules()
    bad = []
    for module, path in sorted(modules.items()):
        if not _in(module, *FEATURES):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            named = (
                owner.id
                if isinstance(owner, ast.Name)
                else owner.attr
                if isinstance(owner, ast.Attribute)
                else None
            )
            if named in ("ns", "host") and node.attr not in members:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not bad, f"features reach past FeatureHost: {bad}"


def test_the_namespace_implements_feature_host() -> None:
    """Every FeatureHost member exists on ConsultNamespace with the same parameters (the
    protocol is what features are typed against; no type checker runs in CI)."""
    import inspect

    from kernel.extensions import FeatureHost
    from signaling.namespace import ConsultNamespace

    missing, differ = [], []
    for name in sorted(_host_members()):
        if name in ("registry", "max_participants"):  # instance attributes set in __init__
            continue
        impl = getattr(ConsultNamespace, name, None)
        if impl is None:
            missing.append(name)
            continue
        want = list(inspect.signature(getattr(FeatureHost, name)).parameters)
        have = list(inspect.signature(impl).parameters)
        if want != have:
            differ.append(f"{name}: protocol {want}, namespace {have}")
    assert not missing and not differ, (missing, differ)
