"""The twin's events: everything that enters the log and everything the balancer decides.

Every event is a strict, frozen pydantic model with a ``type`` tag and a schema version ``v``.
Memory amounts are whole MiB (Hyper-V's counters use MB = 2^20 bytes, DOMAIN.md conventions) and
every such field says so with a ``_mib`` suffix. Time is event time, ``at_ms``: milliseconds since
the Unix epoch, never read from a clock.

Inputs come from the host (host and VM lifecycle), from guests (DM_STATUS_REPORT and the answers to
the balancer's requests, DOMAIN.md §2.4) and from the balancer's own clock (``balancer.tick``).
Decisions are what the balancer did; each carries a per-VM sequence number ``seq`` so that an
actuator can apply it exactly once, and guests' answers name the ``seq`` they answer.

Any event may carry ``chain``: the digest that links it to the previous event of its host in a
tamper-evident log (``twin.chain``). It is not part of the event's content: ``model_dump_json``
leaves it out (that is the canonical form the digest covers) and ``twin.log.encode`` appends it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar, Union


from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, TypeAdapter, model_serializer, model_validator

__all__ = [
    "SCHEMA_VERSION",
    "Mib",
    "MemorySettings",
    "GuestCapabilities",
    "HostJoined",
    "HostMemoryChanged",
    "VmStarted",
    "VmStopped",
    "VmRestarted",
    "VmSettingsChanged",
    "GuestStatusReported",
    "BalloonResponded",
    "UnballoonResponded",
    "HotAddResponded",
    "BalancerTicked",
    "BalloonTargetSet",
    "UnballoonRequested",
    "MemoryAdditionRequested",
    "SmartPagingStarted",
    "SmartPagingEnded",
    "InputEvent",
    "Decision",
    "BalancerRound",
    "Entry",
    "flatten",
    "Event",
    "EVENT_ADAPTER",
    "FrameReport",
    "StatusFrame",
    "INPUT_MESSAGE_ADAPTER",
    "INPUT_TYPES",
    "DECISION_TYPES",
    "POLICY_NAMES",
    "Digest",
]

SCHEMA_VERSION = 1
MAX_MIB = 1 << 30  # 1 PiB: far above any host; larger values are typos or unit mix-ups.

Mib = Annotated[int, Field(ge=0, le=MAX_MIB)]
"""A non-negative amount of memory in MiB."""
PositiveMib = Annotated[int, Field(gt=0, le=MAX_MIB)]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\s].*$")]
PolicyName = Literal["hyperv", "squeezed", "mom", "esx"]
POLICY_NAMES: tuple[str, ...] = ("hyperv", "squeezed", "mom", "esx")
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
"""A SHA-256 digest as 64 lower-case hex characters."""


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class _Event(_Model):
    v: Literal[1] = 1
    at_ms: Annotated[int, Field(ge=0)]
    host: Name
    chain: Digest | None = Field(default=None, exclude=True)
    """sha256(previous digest of this host's log + this event's canonical JSON), see ``twin.chain``.
    Excluded from ``model_dump*``: the canonical form is the event without it."""


class _VmEvent(_Event):
    vm: Name


class _Decision(_VmEvent):
    seq: Annotated[int, Field(ge=1)]


class MemorySettings(_Model):
    """A VM's memory settings (Hyper-V Manager / ``Set-VMMemory``, DOMAIN.md §1.1)."""

    dynamic_memory_enabled: bool = True
    startup_mib: PositiveMib
    minimum_mib: Annotated[int, Field(ge=32, le=MAX_MIB)]
    maximum_mib: PositiveMib
    buffer_percent: Annotated[int, Field(ge=5, le=2000)] = 20
    weight: Annotated[int, Field(ge=0, le=10000)] = 5000

    @model_validator(mode="after")
    def _ordered(self) -> MemorySettings:
        if self.minimum_mib > self.startup_mib:
            raise ValueError(
                f"minimum_mib={self.minimum_mib} must not exceed startup_mib={self.startup_mib}"
            )
        if self.startup_mib > self.maximum_mib:
            raise ValueError(
                f"startup_mib={self.startup_mib} must not exceed maximum_mib={self.maximum_mib}"
            )
        return self


class GuestCapabilities(_Model):
    """What the guest announced in DM_CAPABILITIES_REPORT (DOMAIN.md §2.4)."""

    balloon: bool = True
    hot_add: bool = True
    hot_add_alignment_mib: Annotated[int, Field(ge=1, le=1 << 15)] = 128

    @model_validator(mode="after")
    def _power_of_two(self) -> GuestCapabilities:
        alignment = self.hot_add_alignment_mib
        if alignment & (alignment - 1):
            raise ValueError(f"hot_add_alignment_mib={alignment} must be a power of two (2^n MB)")
        return self


# --- inputs: host and VM lifecycle -------------------------------------------------------------


class HostJoined(_Event):
    """A host joins the twin with its physical memory and the reserve kept for the parent partition."""

    type: Literal["host.joined"] = "host.joined"
    total_mib: PositiveMib
    reserve_mib: Mib
    policy: PolicyName = "hyperv"
    twin_version: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, exclude_if=lambda value: value is None)
    """Version of the twin whose rules decided for this host (``twin.__version__``); stamped by
    whoever writes the log (``twin.chain.Chainer``), left out of the JSON when unknown."""

    @model_validator(mode="after")
    def _reserve_below_total(self) -> HostJoined:
        if self.reserve_mib >= self.total_mib:
            raise ValueError(f"reserve_mib={self.reserve_mib} must be below total_mib={self.total_mib}")
        return self


class HostMemoryChanged(_Event):
    """The host's physical memory or its reserve changed (memory added, reserve re-computed)."""

    type: Literal["host.memory_changed"] = "host.memory_changed"
    total_mib: PositiveMib
    reserve_mib: Mib

    @model_validator(mode="after")
    def _reserve_below_total(self) -> HostMemoryChanged:
        if self.reserve_mib >= self.total_mib:
            raise ValueError(f"reserve_mib={self.reserve_mib} must be below total_mib={self.total_mib}")
        return self


class VmStarted(_VmEvent):
    """A VM is started from Off with its settings and its guest's capabilities."""

    type: Literal["vm.started"] = "vm.started"
    settings: MemorySettings
    capabilities: GuestCapabilities = GuestCapabilities()


class VmStopped(_VmEvent):
    """A VM is turned off; its memory returns to the host."""

    type: Literal["vm.stopped"] = "vm.stopped"


class VmRestarted(_VmEvent):
    """A running VM restarts: it boots again with Startup RAM (Smart Paging may bridge a gap, §1.6)."""

    type: Literal["vm.restarted"] = "vm.restarted"


class VmSettingsChanged(_VmEvent):
    """Memory settings changed while the VM runs (§1.1: Maximum may only rise, Minimum only fall)."""

    type: Literal["vm.settings_changed"] = "vm.settings_changed"
    minimum_mib: Annotated[int, Field(ge=32, le=MAX_MIB)] | None = None
    maximum_mib: PositiveMib | None = None
    buffer_percent: Annotated[int, Field(ge=5, le=2000)] | None = None
    weight: Annotated[int, Field(ge=0, le=10000)] | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> VmSettingsChanged:
        if all(
            value is None
            for value in (self.minimum_mib, self.maximum_mib, self.buffer_percent, self.weight)
        ):
            raise ValueError("no setting given: name at least one of minimum_mib, maximum_mib, "
                             "buffer_percent, weight")
        return self


# --- inputs: the guest ---------------------------------------------------------------------------


class GuestStatusReported(_VmEvent):
    """DM_STATUS_REPORT: the guest's committed memory (its demand, ballooned pages included) and
    available memory, posted every second (DOMAIN.md §2.4)."""

    type: Literal["guest.status"] = "guest.status"
    committed_mib: Mib
    available_mib: Mib


class BalloonResponded(_VmEvent):
    """DM_BALLOON_RESPONSE: pages the guest actually released; fewer than asked means its floor."""

    type: Literal["guest.balloon_response"] = "guest.balloon_response"
    seq: Annotated[int, Field(ge=1)]
    released_mib: Mib


class UnballoonResponded(_VmEvent):
    """DM_UNBALLOON_RESPONSE: the guest took back the pages it was given."""

    type: Literal["guest.unballoon_response"] = "guest.unballoon_response"
    seq: Annotated[int, Field(ge=1)]


class HotAddResponded(_VmEvent):
    """DM_MEM_HOT_ADD_RESPONSE: memory added, and whether a shortfall is permanent or transient."""

    type: Literal["guest.hot_add_response"] = "guest.hot_add_response"
    seq: Annotated[int, Field(ge=1)]
    added_mib: Mib
    result: Literal["success", "transient_failure", "permanent_failure"] = "success"


class BalancerTicked(_Event):
    """One balancing round of a host's balancer (Hyper-V re-evaluates about once a second, §1.4)."""

    type: Literal["balancer.tick"] = "balancer.tick"


# --- decisions -----------------------------------------------------------------------------------


class BalloonTargetSet(_Decision):
    """Inflate the balloon: ask the guest to release ``remove_mib`` (DM_BALLOON_REQUEST)."""

    type: Literal["decision.balloon"] = "decision.balloon"
    remove_mib: PositiveMib
    target_mib: Mib
    reason: str = ""


class UnballoonRequested(_Decision):
    """Deflate the balloon: give back ``return_mib`` of ballooned memory (DM_UNBALLOON_REQUEST)."""

    type: Literal["decision.unballoon"] = "decision.unballoon"
    return_mib: PositiveMib
    target_mib: Mib
    reason: str = ""


class MemoryAdditionRequested(_Decision):
    """Hot-add ``add_mib`` of new memory (DM_MEM_HOT_ADD_REQUEST)."""

    type: Literal["decision.hot_add"] = "decision.hot_add"
    add_mib: PositiveMib
    target_mib: Mib
    reason: str = ""


class SmartPagingStarted(_Decision):
    """A restarting VM could not get its Startup RAM: ``paging_mib`` are backed by a paging file."""

    type: Literal["decision.smart_paging_started"] = "decision.smart_paging_started"
    paging_mib: PositiveMib


class SmartPagingEnded(_Decision):
    """The Smart Paging file is deleted; ``backed_mib`` of its pages were backed by RAM."""

    type: Literal["decision.smart_paging_ended"] = "decision.smart_paging_ended"
    backed_mib: Mib


_M = TypeVar("_M", bound=BaseModel)
_new, _set = object.__new__, object.__setattr__
_TEMPLATES: dict[type[BaseModel], dict[str, Any]] = {}


def _template(model: type[BaseModel]) -> dict[str, Any]:
    _TEMPLATES[model] = {name: None if info.is_required() else info.get_default(call_default_factory=True)
                         for name, info in model.model_fields.items()}
    return _TEMPLATES[model]


def trusted(model: type[_M], **fields: Any) -> _M:
    """``model(**fields)`` without validating: for values the twin has already bounded itself
    (the balancer's decisions), never for input. Equal to the validated event, field for field."""
    values = (_TEMPLATES.get(model) or _template(model)).copy()
    values.update(fields)  # in the fields' own order, as validation writes them
    return built(model, values, set(fields))


def built(model: type[_M], values: dict[str, Any], given: set[str]) -> _M:
    """``trusted`` from ``values`` that already hold every field in the model's order (the dict
    is used as it is), with ``given`` the fields that were set explicitly (copied)."""
    made = _new(model)
    _set(made, "__dict__", values)
    _set(made, "__pydantic_fields_set__", given.copy())
    _set(made, "__pydantic_extra__", None)
    _set(made, "__pydantic_private__", None)
    return made


InputEvent = Union[
    HostJoined,
    HostMemoryChanged,
    VmStarted,
    VmStopped,
    VmRestarted,
    VmSettingsChanged,
    GuestStatusReported,
    BalloonResponded,
    UnballoonResponded,
    HotAddResponded,
    BalancerTicked,
]
Decision = Union[
    BalloonTargetSet,
    UnballoonRequested,
    MemoryAdditionRequested,
    SmartPagingStarted,
    SmartPagingEnded,
]


class FrameReport(_Model):
    """One guest's DM_STATUS_REPORT inside a frame."""

    vm: Name
    committed_mib: Mib
    available_mib: Mib


class StatusFrame(_Event):
    """What a parent-partition collector sends each second: the status reports of many guests of
    one host at one instant. The worker logs a frame as one entry (the reports it accepted), which
    folds like its reports one after the other (``flatten``).

    ``balanced`` is the worker's, never an input's: in the log it says that the host's balancing
    round ran at the frame's time, right after its reports, and decided nothing. Such a frame
    folds like its reports and then a ``balancer.tick``; a round that decides something is an
    entry of its own. Written only when true, so other frames read as before."""

    type: Literal["guest.status_frame"] = "guest.status_frame"
    reports: list[FrameReport] = Field(max_length=100_000)
    # Left out unless true by pydantic-core itself: a Python serializer hook made writing a frame
    # go through a dict of all its reports, twice the time.
    balanced: bool = Field(default=False, exclude_if=lambda balanced: not balanced)

    def report_events(self) -> list[GuestStatusReported]:
        """The frame's reports as events of their own."""
        at_ms, host = self.at_ms, self.host
        return [GuestStatusReported(at_ms=at_ms, host=host, vm=r.vm, committed_mib=r.committed_mib,
                                    available_mib=r.available_mib) for r in self.reports]

    def events(self) -> list[GuestStatusReported | BalancerTicked]:
        """The frame as the events it folds like: its reports, and the tick of its empty round
        if it is ``balanced``."""
        reports: list[GuestStatusReported | BalancerTicked] = list(self.report_events())
        if self.balanced:
            reports.append(BalancerTicked(at_ms=self.at_ms, host=self.host))
        return reports


RoundDecision = Annotated[Union[BalloonTargetSet, UnballoonRequested, MemoryAdditionRequested, SmartPagingEnded],
                          Field(discriminator="type")]
_INHERITED = ("v", "at_ms", "host")


class BalancerRound(_Event):
    """One balancing round and the decisions it made, as one log entry: it folds like a
    ``balancer.tick`` followed by its decisions (``flatten``). Each decision is written without
    ``v``, ``at_ms`` and ``host``: it has the round's."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _round_schema(schema))

    type: Literal["balancer.round"] = "balancer.round"
    decisions: list[RoundDecision] = Field(default_factory=list, max_length=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _inherit(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("decisions"), list):
            shared = {key: data[key] for key in _INHERITED if key in data}
            data = {**data, "decisions": [{**shared, **item} if isinstance(item, dict) else item
                                          for item in data["decisions"]]}
        return data

    @model_validator(mode="after")
    def _same_round(self) -> BalancerRound:
        for k, decision in enumerate(self.decisions):
            if decision.at_ms != self.at_ms or decision.host != self.host:
                raise ValueError(f"decision {k} ({decision.host} at {decision.at_ms}) is not of this round "
                                 f"({self.host} at {self.at_ms})")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        if not isinstance(self.decisions, list):  # the balancer's rows (twin.decisions): as events
            self.__dict__["decisions"] = list(self.decisions)
        data = handler(self)
        data["decisions"] = [{key: value for key, value in item.items() if key not in _INHERITED}
                             for item in data["decisions"]]
        return data

    def model_dump_json(self, **options: Any) -> str:  # type: ignore[override]
        """As pydantic's, and without options the same text written directly: a round of a busy
        host holds hundreds of decisions, and pydantic's serializer calls ``_compact`` on them."""
        if options:
            return super().model_dump_json(**options)
        decisions = self.decisions
        written = getattr(decisions, "compact_json", None)  # the balancer's rows (twin.decisions)
        items = ",".join(written() if written else [_compact_json(d) for d in decisions])
        return (f'{{"v":{self.v},"at_ms":{self.at_ms},"host":{_quoted(self.host)},"type":"balancer.round",'
                f'"decisions":[{items}]}}')

    def events(self) -> list[InputEvent | Decision]:
        """The round as its tick and its decisions, events of their own."""
        return [BalancerTicked(at_ms=self.at_ms, host=self.host), *self.decisions]


def _quoted(text: str) -> str:
    """``text`` as a JSON string, as pydantic writes it (UTF-8, the short escapes)."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


def _compact_json(decision: BaseModel) -> str:
    """A decision inside a round, as ``_compact`` writes it: its own fields in order, without the
    round's (``tests/twin/test_events.py`` holds it to pydantic's text)."""
    d = decision.__dict__
    head = f'{{"vm":{_quoted(d["vm"])},"seq":{d["seq"]},"type":"{d["type"]}",'
    kind = d["type"]
    if kind == "decision.smart_paging_ended":
        return f'{head}"backed_mib":{d["backed_mib"]}}}'
    amount = _AMOUNT[kind]
    return f'{head}"{amount}":{d[amount]},"target_mib":{d["target_mib"]},"reason":{_quoted(d["reason"])}}}'


_AMOUNT = {"decision.balloon": "remove_mib", "decision.unballoon": "return_mib", "decision.hot_add": "add_mib"}


def _round_schema(schema: dict[str, Any]) -> None:
    """A round's decisions as written: each decision's own fields, without the round's."""
    schema["properties"]["decisions"] = {
        "type": "array", "title": "Decisions", "items": {
            "type": "object", "required": ["vm", "seq", "type"],
            "properties": {"vm": {"type": "string"}, "seq": {"type": "integer", "minimum": 1},
                           "type": {"enum": [t.model_fields["type"].default for t in RoundDecision.__origin__.__args__]}},
            "description": "A decision (see its own schema) without v, at_ms and host: it has the round's."}}


Entry = Union[InputEvent, Decision, StatusFrame, BalancerRound]
"""Anything a log line holds: an input, a decision, a frame of reports, or a round."""

Event = Annotated[Union[InputEvent, Decision, StatusFrame, BalancerRound], Field(discriminator="type")]

EVENT_ADAPTER: TypeAdapter[Entry] = TypeAdapter(Event)
"""Validates one log entry from JSON text or a dict, choosing the model by its ``type`` tag."""


def flatten(entry: Entry) -> list[InputEvent | Decision]:
    """An entry as the events it folds like: a frame's reports, a round's tick and decisions, else
    the entry itself."""
    if isinstance(entry, (StatusFrame, BalancerRound)):
        return entry.events()  # type: ignore[return-value]
    return [entry]


InputMessage = Annotated[Union[InputEvent, StatusFrame], Field(discriminator="type")]
INPUT_MESSAGE_ADAPTER: TypeAdapter[InputEvent | StatusFrame] = TypeAdapter(InputMessage)
"""Validates one wire message: any input event, or a frame of status reports."""

INPUT_TYPES: tuple[type[BaseModel], ...] = InputEvent.__args__  # type: ignore[attr-defined]
DECISION_TYPES: tuple[type[BaseModel], ...] = Decision.__args__  # type: ignore[attr-defined]
