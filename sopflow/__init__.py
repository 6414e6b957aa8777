"""sopflow: a declarative workflow / SOP engine.

Everything is installed under this one name, so that nothing collides with another package's
`engine` or `cli`: `sopflow.engine` (what an embedder imports), `sopflow.cli` (the `sopflow`
command), and the data packages `sopflow.schemas` and `sopflow.definitions`. In the repository the
four live as top-level folders; `sopflow/` links to them.
"""
