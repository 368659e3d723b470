"""The evaluation protocol: which model each client is scored on, when, on which tasks, and the unseen test.

One frozen object, recorded in every result and read by the engine's evaluation, the results summary and
the leaderboard (which never ranks two protocols in one table). ``official`` (the default) is the protocol
of the FedMosaic code (snumprlab/fedmosaic: train_VLM_CL.py saves each client's model right after its own
local training, eval_VLM_CL.py scores that model for every method; combined_score.py / _matrix.py pick the
rounds). ``server-global`` is DRAKE's protocol before 2026-12: a method scored on what the server holds for
the client (FedAvg: the fresh average), on tasks seen so far, at the scenario's ``eval_rounds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from drake.errors import SpecError
from drake.registry import Registry

SCORED = ("post-local", "server")
UNSEEN_CLIENTS = ("one-per-task", "all")


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol (rounds are 1-based, as everywhere in results)."""

    name: str
    summary: str = field(default="", compare=False)
    #: ``post-local``: each client's model as it stands after its own latest local training (the server's
    #: aggregate is never loaded); ``server``: the method first loads what the server holds for the client
    scored: str = "post-local"
    #: Self is scored at ``self_points`` evenly spaced rounds floor(R * k / n), k = 1..n (R = the scenario's
    #: rounds; 20 rounds and n = 8 give the official 2, 5, 7, 10, 12, 15, 17, 20); None: the scenario's
    #: ``eval_rounds``
    self_points: int | None = 8
    #: Others (the client x client matrix) at floor(R * k / n), k = 1..n (official: 5, 10, 15, 20)
    others_points: int | None = 4
    #: score every task of a client at every evaluation, also those not yet arrived (official); False:
    #: only the tasks a client has started
    all_tasks: bool = True
    #: who is tested on the unseen tasks: ``one-per-task`` (official: the held-out scenarios give each client
    #: one task; here unseen task i goes to the i-th client modulo the clients, in id order) or ``all``
    unseen_clients: str = "one-per-task"
    #: fine-tuning steps on each unseen task, from the client's final scored model (official: 200
    #: iterations at batch 4; x 20/100 with batch x 2 as every budget of the harness, see baselines/_dual.py)
    unseen_steps: int = 40
    #: score the adapted model every N steps (official: every 25 of 200 -> 9 points with step 0)
    unseen_eval_every: int = 5
    #: unseen fine-tuning learning rate = the method's lr (and lr groups) x this (official 1e-5 vs 2e-5)
    unseen_lr_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.scored not in SCORED:
            raise SpecError(f"protocol {self.name!r}: scored {self.scored!r}: expected one of {', '.join(SCORED)}")
        for key in ("self_points", "others_points"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise SpecError(f"protocol {self.name!r}: {key} {value}: expected 1 or more (or none)")
        if self.unseen_clients not in UNSEEN_CLIENTS:
            raise SpecError(
                f"protocol {self.name!r}: unseen_clients {self.unseen_clients!r}: expected one of {', '.join(UNSEEN_CLIENTS)}"
            )
        if self.unseen_steps < 0 or self.unseen_eval_every < 0:
            raise SpecError(f"protocol {self.name!r}: unseen_steps and unseen_eval_every must be 0 or more")
        if self.unseen_lr_scale <= 0:
            raise SpecError(f"protocol {self.name!r}: unseen_lr_scale {self.unseen_lr_scale}: expected > 0")

    # ------------------------------------------------------------------------------------ schedule
    @staticmethod
    def _spaced(rounds: int, points: int) -> tuple[int, ...]:
        return tuple(sorted({rounds * k // points for k in range(1, points + 1)} - {0}))

    def self_rounds(self, scenario: Any) -> tuple[int, ...]:
        """Rounds at which Self is scored."""
        if self.self_points is None:
            return tuple(scenario.eval_rounds)
        return self._spaced(scenario.rounds, self.self_points)

    def others_rounds(self, scenario: Any) -> tuple[int, ...]:
        """Rounds at which Others is scored."""
        if self.others_points is None:
            return tuple(scenario.eval_rounds)
        return self._spaced(scenario.rounds, self.others_points)

    def eval_rounds(self, scenario: Any) -> tuple[int, ...]:
        return tuple(sorted(set(self.self_rounds(scenario)) | set(self.others_rounds(scenario))))

    def scored_tasks(self, client: Any, rnd: int) -> list[str]:
        """The tasks of ``client`` (a ClientSpec) scored after 0-based round ``rnd``, in arrival order."""
        tasks: list[str] = []
        for stage in client.stages:
            if self.all_tasks or stage.start_round <= rnd:
                tasks += [t for t in stage.tasks if t not in tasks]
        return tasks

    def unseen_tasks(self, client_ids: Sequence[int], unseen: Sequence[str]) -> dict[int, list[str]]:
        """The unseen tasks each client is tested (and fine-tuned) on."""
        ids = sorted(client_ids)
        if self.unseen_clients == "all":
            return {cid: list(unseen) for cid in ids}
        out: dict[int, list[str]] = {}
        for i, task in enumerate(unseen):
            out.setdefault(ids[i % len(ids)], []).append(task)
        return out

    def unseen_stops(self) -> list[int]:
        """Adaptation steps after which the adapted model is scored (the last one always)."""
        steps, every = self.unseen_steps, self.unseen_eval_every
        if steps <= 0:
            return []
        return sorted({*range(every, steps + 1, every), steps}) if every > 0 else [steps]

    # ------------------------------------------------------------------------------------ records
    def with_overrides(self, **values: Any) -> Protocol:
        """This protocol with some fields changed (None values are ignored); keeps its name."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("summary")
        return d

    def record(self, scenario: Any) -> dict[str, Any]:
        """What a result file stores: the fields, the resolved rounds, and whether it is the named protocol
        unchanged (the leaderboard keys its tables on that)."""
        official = PROTOCOLS.get(self.name) if self.name in PROTOCOLS.names() else None
        return {
            **self.to_dict(),
            "self_rounds": list(self.self_rounds(scenario)),
            "others_rounds": list(self.others_rounds(scenario)),
            "modified": official is None or official != self,
        }


def table_key(recorded: dict[str, Any]) -> str:
    """The leaderboard table a recorded protocol belongs to: its name, or ``name*`` when modified."""
    return f"{recorded['name']}*" if recorded.get("modified") else str(recorded["name"])


PROTOCOLS: Registry[Protocol] = Registry("protocol")
PROTOCOLS.register(
    "official",
    Protocol("official", summary="FedMosaic's: each client's post-local model; Self at 8 rounds on all 4 tasks, "
             "Others at 4; unseen: each task on one client, 40 steps scored every 5"),
)  # fmt: skip
PROTOCOLS.register(
    "server-global",
    Protocol("server-global", summary="DRAKE before 2026-12: the server's model for each client, seen tasks at "
             "the scenario's eval_rounds; unseen: 10 steps scored once", scored="server", self_points=None,
             others_points=None, all_tasks=False, unseen_clients="all", unseen_steps=10, unseen_eval_every=0,
             unseen_lr_scale=1.0),
)  # fmt: skip
DEFAULT_PROTOCOL = "official"
