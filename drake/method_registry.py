"""The method registry: one lazy line per federated method (a method = one file + one line here)."""

from __future__ import annotations

from typing import Any

from drake.errors import DrakeError
from drake.registry import Registry


def check_method(name: str, cls: Any) -> None:
    """The class's ``name`` is what result files, their file names and the board call the method: it must be
    the name it is registered under (a subclass that forgets it would run and submit as its parent)."""
    if getattr(cls, "name", None) != name:
        raise DrakeError(
            f"method {name!r} is registered as {cls.__module__}.{cls.__qualname__}, whose name is "
            f"{getattr(cls, 'name', None)!r}: set `name = {name!r}` in the class"
        )


METHODS: Registry = Registry("method", check=check_method)

METHODS.register("local", "baselines.local:Local", summary="local LoRA fine-tuning only, no communication (lower bound)")
METHODS.register(
    "fedavg", "baselines.fedavg:FedAvg", summary="FedAvg/FedIT on LoRA, averaged within each architecture"
)
METHODS.register("fedprox", "baselines.fedprox:FedProx", summary="FedAvg + proximal term mu, averaged within each architecture")
METHODS.register("fedper", "baselines.fedper:FedPer", summary="top-block LoRA kept local, the rest averaged within each architecture")
METHODS.register("fedrep", "baselines.fedrep:FedRep", summary="local head steps then body steps; body averaged within each architecture")
METHODS.register("ditto", "baselines.ditto:Ditto", summary="global + personal LoRA (L2 to global); global averaged within each architecture")
METHODS.register("fedsim", "baselines.fedsim:FedSim", summary="global + local LoRA trained simultaneously in one network (both active in every layer); global averaged within each architecture")
METHODS.register("feddpa", "baselines.feddpa:FedDPA", summary="global + local LoRA, instance-wise mix at inference; global averaged within each architecture")
METHODS.register("feddat", "baselines.feddat:FedDAT", summary="dual-adapter teacher + mutual KD; global averaged within each architecture")
METHODS.register("perada", "baselines.perada:PerAda", summary="personal LoRA + server KD on public data (across architectures); global averaged within each architecture")
METHODS.register("apfl", "baselines.apfl:APFL", summary="global + local LoRA mixed by a learned alpha; global averaged within each architecture")
METHODS.register("fedmosaic", "fedmosaic.method:FedMosaic", summary="PQ-LoRA shared across architectures + RELA relevance-weighted per-client globals")
METHODS.register("hetlora", "baselines.hetlora:HetLoRA", summary="per-client LoRA ranks: zero-pad, norm-weighted average, truncate; averaged within each architecture")
METHODS.register("flexlora", "baselines.flexlora:FlexLoRA", summary="per-client LoRA ranks: mean of B A, SVD back to each rank; averaged within each architecture")
METHODS.register("feddf", "baselines.feddf:FedDF", summary="FedAvg + server ensemble distillation on public data (across architectures); averaged within each architecture")
METHODS.register("fedms", "baselines.fedms:FedMS", summary="global expert LoRA with sparsely activated blocks, then frozen global + local expert mixed by a gate; global then gate averaged within each architecture")
METHODS.register("fedamole", "baselines.fedamole.method:FedAMoLE", summary="per-module LoRA expert pools re-assigned to clients by reverse selection (exact ILP); experts averaged over their holders within each architecture")
METHODS.register("fedmkt", "baselines.fedmkt:FedMKT", summary="mutual KD between clients and per-architecture server models on public data (token-aligned, DualMinCE); no parameter averaging")
METHODS.register("takfl", "baselines.takfl:TAKFL", summary="per student architecture, one KD task vector per teacher architecture on public data, merged by task arithmetic; averaged within each architecture")
METHODS.register("mosaic", "baselines.mosaic.method:Mosaic", summary="per-task generators uploaded once; task experts fused by a meta model, distilled into each architecture's global on generated samples only")
