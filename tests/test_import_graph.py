"""No import circles in ``asrserve/`` (module level and lazy, in-function
imports alike), so every layer can be read, tested and replaced on its own."""

from __future__ import annotations

import grimp


def test_no_import_circles() -> None:
    graph = grimp.build_graph("asrserve", cache_dir=None)
    circles = sorted(
        f"{importer} -> {imported} -> ... -> {importer}"
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    )
    assert graph.modules, "grimp found no modules"
    assert not circles, "\n".join(circles)
