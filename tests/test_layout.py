"""The package's layout: imports flow one way, down the floors, with no circle.

The floors, from the edge of the package to its bottom::

    6  cli, cli.*, __main__                 the command line (demo, train, bench)
    5  bench, bench.*                       the benchmark library (times the public API and the kernels)
    4  rnn_xp (the package's __init__)      re-exports the public names
    3  layer, convert, convert.*            the torch-style layer and the converters (one
                                            module per format)
    2  forward, backward, columns           validate, pick a kernel, shape the result
    1  kernels, kernels.*                   one module per library, the dispatch in __init__
    0  _checks, _compat, _activations, _backends, _params (torch's parameter names and
                                            the torch reader, which layer and convert share)

A module may import modules on its own floor or below, never above, and the
graph (every ``import`` statement, inside functions too) has no circle. So a
kernel never imports a public module, ``layer`` does not import
``convert`` (``convert`` imports ``layer``), and nothing but the command line
imports the benchmark library. The graph is read from the
source with ``ast``: nothing is imported.

Run this file to print the graph: ``python tests/test_layout.py``.
"""

from __future__ import annotations

import ast
import pathlib
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "rnn_xp"

FLOORS = {
    "rnn_xp.cli": 6,
    "rnn_xp.__main__": 6,
    "rnn_xp.bench": 5,
    "rnn_xp": 4,
    "rnn_xp.layer": 3,
    "rnn_xp.convert": 3,
    "rnn_xp.forward": 2,
    "rnn_xp.backward": 2,
    "rnn_xp.columns": 2,
    "rnn_xp.kernels": 1,
    "rnn_xp._checks": 0,
    "rnn_xp._compat": 0,
    "rnn_xp._activations": 0,
    "rnn_xp._backends": 0,
    "rnn_xp._devices": 0,
    "rnn_xp._params": 0,
    "rnn_xp._prepare": 0,
    "rnn_xp.cells": 0,
}


def modules(root=PACKAGE):
    """``{dotted name: path}`` of every module of the package under ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def floor(name):
    """The floor of a module: its own entry, else its package's (``rnn_xp.kernels.jax`` -> kernels)."""
    while name not in FLOORS:
        parent = name.rsplit(".", 1)[0]
        if parent == "rnn_xp" or "." not in name:  # a module of the top package must be listed
            return None
        name = parent
    return FLOORS[name]


def _targets(name, path, node, mods):
    """The package's modules that one import statement of module ``name`` reaches."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        names = [f"{target}.{alias.name}" for alias in node.names]
        candidates = [full if full in mods else target for full in names]
    else:
        candidates = [alias.name for alias in node.names]
    for target in candidates:
        while target and target not in mods:  # a name inside a module: the module
            target = target.rsplit(".", 1)[0] if "." in target else ""
        # `from . import x` inside a package reaches x, not the package's own __init__
        if target and target != name and not name.startswith(target + "."):
            yield target


def import_graph(root=PACKAGE):
    """``{module: {imported module of the package}}``, from every import statement."""
    mods = modules(root)
    graph = {name: set() for name in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name].update(_targets(name, path, node, mods))
    return graph


def circles(graph):
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def upward(graph):
    """``(importer, imported)`` pairs that point up the floors."""
    return sorted(
        (a, b) for a, targets in graph.items() for b in targets
        if floor(a) is not None and floor(b) is not None and floor(b) > floor(a)
    )  # fmt: skip


def _module_target(name, path, node):
    """The dotted module a ``from ... import`` statement of module ``name`` (file ``path``) reads from."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_private(attr):
    return attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))


def _dotted(node):
    """``a.b.c`` of an attribute chain on a name, as a list of parts, or ``None``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def private_uses(root=PACKAGE, prefix="rnn_xp"):
    """Private names that a module of the package takes from another one: ``["module:line: target._name"]``.

    A private name begins with one underscore (not a ``__dunder__``). Two
    kinds of use are listed, in the modules whose dotted name starts with
    ``prefix``: ``from X import _name`` where ``X`` is another module of the
    package, and ``alias._name`` where ``alias`` (or a dotted chain such as
    ``rnn_xp.kernels.numpy``) names another module of the package through an
    import. A private *module* (``_compat``, ``kernels._blocks``) is no
    private name: importing it is how the package shares code. Attributes of
    anything else (``x._meta`` of a Dask array) are not the package's names.
    Read from the source with ``ast``, nothing imported.
    """
    mods = modules(root)
    found = []
    for name, path in mods.items():
        if not (name == prefix or name.startswith(prefix + ".")):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        bound = {}  # local name -> module of the package it names
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in mods:
                        bound[alias.asname] = alias.name
                    elif not alias.asname and alias.name.split(".")[0] in mods:
                        bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                target = _module_target(name, path, node)
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    if full in mods:
                        bound[alias.asname or alias.name] = full
                    elif target in mods and target != name and _is_private(alias.name):
                        found.append(f"{name}:{node.lineno}: {target}.{alias.name}")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or isinstance(getattr(node, "ctx", None), ast.Del):
                continue
            parts = _dotted(node)
            if parts is None or parts[0] not in bound or not _is_private(parts[-1]):
                continue
            module = bound[parts[0]]
            for part in parts[1:-1]:  # a chain through submodules: rnn_xp.kernels.numpy._x
                if f"{module}.{part}" not in mods:
                    module = None
                    break
                module = f"{module}.{part}"
            if module is not None and module != name and f"{module}.{parts[-1]}" not in mods:
                found.append(f"{name}:{node.lineno}: {module}.{parts[-1]}")
    return sorted(set(found), key=lambda use: (use.split(":")[0], int(use.split(":")[1])))


# -- the tests -------------------------------------------------------------------


def test_every_module_has_a_floor():
    unplaced = [name for name in modules() if floor(name) is None]
    assert not unplaced, f"modules on no floor (add them to FLOORS): {unplaced}"


def test_no_circle():
    assert circles(import_graph()) == []


def test_imports_point_down():
    bad = [f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})" for a, b in upward(import_graph())]
    assert not bad, "imports against the direction:\n" + "\n".join(bad)


def test_kernels_import_no_public_module():
    graph = import_graph()
    for name, targets in graph.items():
        if floor(name) == 1:
            assert all(floor(t) <= 1 for t in targets), (name, sorted(targets))


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """The checks themselves can fail: a kernel importing ``forward`` makes a circle and points up."""
    root = tmp_path / "rnn_xp"
    (root / "kernels").mkdir(parents=True)
    (root / "__init__.py").write_text("from .forward import f\n")
    (root / "forward.py").write_text("from .kernels import k\n")
    (root / "kernels" / "__init__.py").write_text("def k():\n    from ..forward import f\n")
    graph = import_graph(root)
    assert graph["rnn_xp.kernels"] == {"rnn_xp.forward"}
    assert circles(graph) == [["rnn_xp.forward", "rnn_xp.kernels"]]
    assert upward(graph) == [("rnn_xp.kernels", "rnn_xp.forward")]


def test_no_module_takes_a_private_name_from_another():
    """What modules share lives under public names in a module of its own (``kernels._blocks``,
    ``cells._base``, ``_params``, ...): no module of the package takes another one's private name."""
    assert private_uses(PACKAGE) == []


def test_the_private_name_check_sees_each_kind_of_use(tmp_path):
    root = tmp_path / "rnn_xp"
    (root / "kernels").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "kernels" / "__init__.py").write_text("from .a import public\n")
    (root / "kernels" / "_shared.py").write_text("def helper():\n    pass\n")
    (root / "kernels" / "a.py").write_text("def public():\n    pass\n\n\ndef _private():\n    _private()\n")
    (root / "kernels" / "b.py").write_text(
        "from . import _shared\n"  # a private module: allowed
        "from . import a\n"
        "from .a import _private\n"  # 1: from X import _name
        "import rnn_xp.kernels.a as alias\n"
        "\n\n"
        "def f(x):\n"
        "    _shared.helper()\n"
        "    a._private()\n"  # 2: module._name
        "    alias._private()\n"  # 3: an alias of the module
        "    import rnn_xp.kernels.a\n"
        "    rnn_xp.kernels.a._private()\n"  # 4: a dotted chain
        "    return x._meta, a.public, __name__\n"  # not the package's names
    )
    (root / "c.py").write_text("from .kernels import a\n\n\ndef g():\n    return a._private\n")
    found = private_uses(root, prefix="rnn_xp.kernels")
    assert found == [
        "rnn_xp.kernels.b:3: rnn_xp.kernels.a._private",
        "rnn_xp.kernels.b:9: rnn_xp.kernels.a._private",
        "rnn_xp.kernels.b:10: rnn_xp.kernels.a._private",
        "rnn_xp.kernels.b:12: rnn_xp.kernels.a._private",
    ]
    assert private_uses(root) == ["rnn_xp.c:5: rnn_xp.kernels.a._private", *found]  # every module


if __name__ == "__main__":  # print the graph: python tests/test_layout.py [path/to/rnn_xp]
    root = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE
    graph = import_graph(root)
    for name in sorted(graph, key=lambda n: (-(floor(n) if floor(n) is not None else 9), n)):
        where = "?" if floor(name) is None else floor(name)
        print(f"[{where}] {name} -> {', '.join(sorted(graph[name])) or '-'}")
    for circle in circles(graph):
        print("circle:", " <-> ".join(circle))
    for a, b in upward(graph):
        print(f"upward: {a} -> {b}")
    private = private_uses(root)
    for use in private:
        print(f"private name used across modules: {use}")
    print(f"circles {len(circles(graph))}, upward imports {len(upward(graph))}, private names across modules "
          f"{len(private)} (enforced in rnn_xp.kernels)")
    sys.exit(1 if circles(graph) or upward(graph) else 0)
