"""Benchmark: in-memory fires per second through `engine.simulate.Simulation`, against bare `transitions`
triggering a bound model with the same states and transitions.

    .venv/bin/python bench/inmemory.py            # 20,000 fires each (a few seconds)
    .venv/bin/python bench/inmemory.py --quick    # 5,000

Both run the mini definition's loop `submit` (draft → route → manager_review, the choice state routed by
its guard `data.amount > 1000`) and `send_back` (manager_review → draft). The baseline machine has the
same 6 states and the same 8 transitions (the two events of draft, the two branches of the choice, the two
events of manager_review, the approval's two exits); its `submit` is two triggers, `submit` then the
route, so that both sides make the same moves per fire. What the engine does on top: who may fire (roles,
$starter), the payload and data checks, the CEL guard, least-loaded assignment, the data change, and an
audit record sealed with SHA-256 over canonical JSON. Ratio = engine / baseline (fires per second).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from _harness import MINI, compare, header, note, per_second
from transitions import Machine

from sopflow.engine.compile import CompiledDefinition
from sopflow.engine.definition.validate import load_definition_file, load_org_file
from sopflow.engine.simulate import Simulation
from sopflow.engine.step import People, Snapshot, actor_from_org, take_step

LOOP = (("submit", "alice"), ("send_back", "mia"))


@dataclass
class Claim:
    """The bare model: what the baseline's guard reads."""

    amount: float
    state: str = "draft"


def bare_machine(model: Claim) -> Machine:
    states = ["draft", "route", "manager_review", "joint", "paid", "cancelled"]
    transitions = [
        {"trigger": "submit", "source": "draft", "dest": "route"},
        {"trigger": "cancel", "source": "draft", "dest": "cancelled"},
        {"trigger": "route", "source": "route", "dest": "joint", "conditions": lambda: model.amount > 1000},
        {"trigger": "route", "source": "route", "dest": "manager_review"},
        {
            "trigger": "approve_claim",
            "source": "manager_review",
            "dest": "paid",
            "conditions": lambda: model.amount <= 500,
        },
        {"trigger": "send_back", "source": "manager_review", "dest": "draft"},
        {"trigger": "approved", "source": "joint", "dest": "paid"},
        {"trigger": "rejected", "source": "joint", "dest": "draft"},
    ]
    return Machine(
        model=model, states=states, transitions=transitions, initial="draft", auto_transitions=False
    )


def baseline(count: int) -> float:
    model = Claim(amount=100)
    bare_machine(model)

    def fire(i: int) -> None:
        if i % 2 == 0:
            model.trigger("submit")  # type: ignore[attr-defined]
            model.trigger("route")  # type: ignore[attr-defined]
        else:
            model.trigger("send_back")  # type: ignore[attr-defined]

    per_second(fire, 1000)
    assert model.state == "draft"
    return per_second(fire, count)


def engine(count: int) -> tuple[float, float]:
    """Simulation fires per second, and take_step alone (no audit record, no case bookkeeping)."""
    org = load_org_file(MINI / "org.yaml")
    compiled = CompiledDefinition(load_definition_file(MINI / "expense.yaml", org))
    sim = Simulation(compiled, org)
    case = sim.start("alice", {"amount": 100, "purpose": "taxi"})

    def fire(i: int) -> None:
        event, actor = LOOP[i % 2]
        sim.fire(case, actor, event)

    per_second(fire, 1000)
    assert case.state == "draft"
    sim_rate = per_second(fire, count)

    people = People(org, lambda role: org.members(role)[0])
    actors = [actor_from_org(org, a) for _, a in LOOP]
    snapshots = [
        Snapshot("draft", {"amount": 100, "purpose": "taxi"}, "alice"),
        Snapshot("manager_review", {"amount": 100, "purpose": "taxi"}, "alice", "mia", "alice"),
    ]

    def step(i: int) -> None:
        take_step(compiled, snapshots[i % 2], actors[i % 2], LOOP[i % 2][0], {}, people)

    per_second(step, 1000)
    return sim_rate, per_second(step, count)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5,000 fires instead of 20,000")
    parser.add_argument("--fires", type=int, help="fires per measurement")
    args = parser.parse_args()
    count = args.fires or (5_000 if args.quick else 20_000)
    header(f"in memory: {count:,} fires of the mini loop, one case")
    theirs = baseline(count)
    ours, step_only = engine(count)
    compare("Simulation.fire", ours, "fires/s", "bare transitions, bound model", theirs, target=0.2)
    note(f"take_step alone (the decision, no audit record): {step_only:,.0f} fires/s")
    note(
        f"per fire: engine {1e6 / ours:.1f} µs, of which the decision {1e6 / step_only:.1f} µs; "
        f"transitions {1e6 / theirs:.1f} µs"
    )


if __name__ == "__main__":
    main()
