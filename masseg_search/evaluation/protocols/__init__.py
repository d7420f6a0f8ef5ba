"""The scoring protocols, one registry: ``"davis"`` (DAVIS semi-supervised J&F) and ``"mosev2"`` (MOSEv2's J&Ḟ).

Callers look a protocol up by name (:func:`get_protocol`) and ask it for its frame scorer and its tables; no
caller tests a protocol's name.
"""
from __future__ import annotations

from masseg_search.errors import MassegError
from masseg_search.evaluation.protocols.base import FrameScoring, ScoringProtocol
from masseg_search.evaluation.protocols.davis import DAVIS
from masseg_search.evaluation.protocols.mosev2 import MOSEV2

REGISTRY: dict[str, ScoringProtocol] = {protocol.name: protocol for protocol in (DAVIS, MOSEV2)}
PROTOCOLS = tuple(REGISTRY)

__all__ = ["PROTOCOLS", "REGISTRY", "FrameScoring", "ScoringProtocol", "get_protocol"]


def get_protocol(name: str) -> ScoringProtocol:
    """The protocol registered as ``name``; an unknown name is a :class:`MassegError` listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise MassegError(f"unknown protocol {name!r}", fix="use " + " or ".join(repr(known) for known in REGISTRY)) from None
