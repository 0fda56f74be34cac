"""The project's own docs: the architecture describes every package, and the README links it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_architecture_doc_names_every_package_and_the_readme_links_it() -> None:
    import pkgutil

    import labelloop

    repo = REPO
    doc = (repo / "docs" / "architecture.md").read_text()
    packages = [
        m.name for m in pkgutil.iter_modules(labelloop.__path__) if m.ispkg and m.name != "sampledata"
    ]
    missing = [name for name in packages if f"`{name}/`" not in doc]
    assert not missing, f"docs/architecture.md does not describe {missing}"
    readme = (repo / "README.md").read_text()
    assert "docs/architecture.md" in readme and "../shared/docs" not in readme
