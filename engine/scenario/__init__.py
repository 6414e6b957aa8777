"""Scenarios: a process owner's own tests of a definition (`ID.test.yaml` beside `ID.yaml`), run against
the real engine on a fake clock by `sopflow test`.

`load` reads and checks a scenario file (positions and hints like every definition error), `run` runs its
scenarios, each on a fresh database, and returns typed results.
"""
