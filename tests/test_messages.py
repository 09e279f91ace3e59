"""The message contract: wire examples, round trips, and garbage that only ever raises
MessageError (naming the bad field)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jupiter_bus import messages
from jupiter_bus.errors import MessageError
from jupiter_bus.messages import (
    ERROR_KINDS,
    MAX_INT,
    MAX_NAME_LEN,
    MAX_NODE_NAME_LEN,
    MAX_PATH_LEN,
    MESSAGE_TYPES,
    LinkCost,
    Message,
    ProfileRequest,
    ProfileResult,
    ResourceSample,
    TransferError,
    TransferProgress,
    TransferRequest,
    TransferResult,
    codec,
    decode,
    encode,
    redact,
)

HERE = Path(__file__).resolve().parent
LOCAL_CONTRACT = HERE / "contract"
SHARED_CONTRACT = HERE.parents[1] / "shared" / "contract"


def _contract_dir() -> Path:
    """$JUPITER_BUS_CONTRACT_DIR, else the shared folder, else the copy beside the tests."""
    candidates = [SHARED_CONTRACT, LOCAL_CONTRACT]
    if os.environ.get("JUPITER_BUS_CONTRACT_DIR"):
        candidates.insert(0, Path(os.environ["JUPITER_BUS_CONTRACT_DIR"]))
    return next(d for d in candidates if d.is_dir() and any(d.glob("*.json")))


CONTRACT_DIR = _contract_dir()


def _contract_files() -> list[Path]:
    """The examples of :data:`CONTRACT_DIR`, plus the copy's examples of types added since.

    The shared folder is fixed (read-only) and may predate a type added by an additive
    change (``transfer.progress``); such a type's example lives only beside the tests.
    """
    files = {p.name: p for p in CONTRACT_DIR.glob("*.json")}
    for path in LOCAL_CONTRACT.glob("*.json"):
        files.setdefault(path.name, path)
    return sorted(files.values(), key=lambda p: p.name)


CONTRACT_FILES = _contract_files()

UUID = "9d2f4e61-7a3b-4c8d-9e0f-1a2b3c4d5e6f"
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decoded_or_error(body: Any) -> Message | MessageError:
    """Decode ``body``; a MessageError is returned, any other exception fails the test."""
    try:
        return decode(body)
    except MessageError as exc:
        return exc


def _error_of(body: Any) -> MessageError:
    result = _decoded_or_error(body)
    assert isinstance(result, MessageError), f"accepted {body!r} as {result!r}"
    return result


def _wire(msg: Message) -> dict[str, Any]:
    wire: dict[str, Any] = orjson.loads(encode(msg))
    return wire


def _dumps(obj: Any) -> bytes:
    """JSON as any producer may write it (the stdlib writes integers beyond 64 bits)."""
    return json.dumps(obj, allow_nan=False).encode()


# -- the contract examples ---------------------------------------------------------------


def test_contract_examples_cover_every_type() -> None:
    types = {orjson.loads(path.read_bytes())["type"] for path in CONTRACT_FILES}
    assert types == set(MESSAGE_TYPES)


@pytest.mark.parametrize("path", CONTRACT_FILES, ids=lambda p: p.name)
def test_contract_example_decodes_and_round_trips(path: Path) -> None:
    raw = path.read_bytes()
    original = orjson.loads(raw)
    msg = decode(raw)
    assert original["type"] == msg.MESSAGE_TYPE
    again = decode(encode(msg))
    assert again == msg
    expected = {k: v for k, v in original.items() if v is not None}
    if isinstance(msg, TransferRequest):  # defaults the encoder writes out
        expected.setdefault("port", 22)
        expected.setdefault("idempotency_key", expected["id"])
    assert orjson.loads(encode(msg)) == expected


@pytest.mark.skipif(not SHARED_CONTRACT.is_dir(), reason="no shared contract folder here")
def test_local_contract_copy_matches_shared_folder() -> None:
    shared = {p.name: orjson.loads(p.read_bytes()) for p in SHARED_CONTRACT.glob("*.json")}
    local = {p.name: orjson.loads(p.read_bytes()) for p in LOCAL_CONTRACT.glob("*.json")}
    copied = {name: body for name, body in local.items() if name in shared}
    assert copied == shared, "tests/contract/ is stale: copy the shared contract examples again"
    # What only the copy holds are examples of types added since, absent from the shared folder.
    shared_types = {body["type"] for body in shared.values()}
    added = {body["type"] for name, body in local.items() if name not in shared}
    assert not added & shared_types, "an example of a shared type exists only in tests/contract/"


def test_contract_example_password_is_hidden_from_repr_and_str() -> None:
    request = decode((CONTRACT_DIR / "transfer.request.json").read_bytes(), TransferRequest)
    assert request.password == "example-only"
    assert "example-only" not in repr(request)
    assert "example-only" not in str(request)
    assert "example-only" not in repr([request])


DOC = HERE.parent / "docs" / "messages.md"


@pytest.mark.skipif(not DOC.is_file(), reason="docs/messages.md is not here")
def test_every_json_example_in_the_docs_decodes() -> None:
    examples = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(examples) >= 5
    for example in examples:
        decode(example)


# -- strategies of valid messages -----------------------------------------------------------

_ARGV_UNSAFE = re.compile(r"^-|[\s\x00-\x1f\x7f]")

uuids = st.uuids().map(str)
node_names = st.from_regex(r"[A-Za-z0-9_-]{1,100}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)
percents = st.floats(min_value=0.0, max_value=100.0)
counts = st.integers(min_value=0, max_value=MAX_INT)
ports = st.integers(min_value=1, max_value=65535)
argv_words = st.text(
    st.characters(exclude_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]), min_size=1, max_size=40
).filter(lambda s: _ARGV_UNSAFE.search(s) is None)
paths = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=80
)
passwords = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=8, max_size=40
)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
envelope = {"id": uuids, "ts": non_negative}


@st.composite
def link_costs(draw: st.DrawFn) -> LinkCost:
    low, high = sorted(draw(st.lists(non_negative, min_size=2, max_size=2)))
    return LinkCost(
        id=draw(uuids),
        ts=draw(non_negative),
        src=draw(node_names),
        dst=draw(node_names),
        a=draw(finite),
        b=draw(finite),
        c=draw(finite),
        samples=draw(counts),
        r2=draw(finite),
        min_kbit=low,
        max_kbit=high,
        model=draw(st.none() | st.sampled_from(sorted(messages.COST_MODELS))),
    )


resource_samples = st.builds(
    ResourceSample,
    **envelope,
    node=node_names,
    cpu_percent=percents,
    cpu_count=st.integers(min_value=1, max_value=MAX_INT),
    memory_percent=percents,
    memory_total_bytes=counts,
    memory_available_bytes=counts,
    host=st.none() | argv_words,
    ssh_port=st.none() | ports,
)
transfer_requests = st.builds(
    TransferRequest,
    **envelope,
    host=argv_words,
    port=ports,
    user=argv_words,
    password=st.none() | passwords,
    source=paths,
    destination=paths,
    engine=st.none() | st.sampled_from(sorted(messages.TRANSFER_ENGINES)),
    idempotency_key=st.just("") | argv_words,
    deadline=st.none() | non_negative,
)
transfer_errors = st.builds(TransferError, st.sampled_from(sorted(ERROR_KINDS)), texts)


@st.composite
def transfer_results(draw: st.DrawFn) -> TransferResult:
    ok = draw(st.booleans())
    return TransferResult(
        id=draw(uuids),
        ts=draw(non_negative),
        request_id=draw(uuids),
        node=draw(node_names),
        ok=ok,
        bytes=draw(counts),
        seconds=draw(non_negative),
        attempts=draw(counts),
        error=None if ok else draw(transfer_errors),
    )


@st.composite
def transfer_progresses(draw: st.DrawFn) -> TransferProgress:
    total = draw(st.none() | counts)
    done = draw(counts if total is None else st.integers(min_value=0, max_value=total))
    return TransferProgress(
        id=draw(uuids),
        ts=draw(non_negative),
        request_id=draw(uuids),
        node=draw(node_names),
        bytes_done=done,
        bytes_total=total,
    )


profile_requests = st.builds(
    ProfileRequest,
    **envelope,
    src=node_names,
    dst=node_names,
    sizes_kb=st.none()
    | st.lists(
        st.integers(min_value=1, max_value=messages.MAX_PROFILE_KB), min_size=1, max_size=16
    ),
    repeats=st.integers(min_value=1, max_value=messages.MAX_PROFILE_REPEATS),
)


@st.composite
def profile_results(draw: st.DrawFn) -> ProfileResult:
    ok = draw(st.booleans())
    fitted = draw(st.booleans())
    points = draw(
        st.lists(st.tuples(non_negative, non_negative), min_size=1 if ok else 0, max_size=20)
    )
    return ProfileResult(
        id=draw(uuids),
        ts=draw(non_negative),
        request_id=draw(uuids),
        src=draw(node_names),
        dst=draw(node_names),
        ok=ok,
        points=tuple(points),
        a=draw(finite) if fitted else None,
        b=draw(finite) if fitted else None,
        c=draw(finite) if fitted else None,
        r2=draw(finite) if fitted else None,
        model=draw(st.none() | st.sampled_from(sorted(messages.COST_MODELS))),
        reason=draw(texts.filter(bool)) if not ok else draw(st.none() | texts.filter(bool)),
    )


any_message = st.one_of(
    resource_samples,
    link_costs(),
    transfer_requests,
    transfer_results(),
    transfer_progresses(),
    profile_requests,
    profile_results(),
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


# -- round trips ------------------------------------------------------------------------------


@QUICK
@given(msg=any_message)
def test_every_valid_message_round_trips(msg: Message) -> None:
    body = encode(msg)
    assert decode(body) == msg
    assert decode(body, type(msg)) == msg
    assert encode(decode(body)) == body


@QUICK
@given(msg=any_message)
def test_bytearray_memoryview_and_str_bodies_decode_alike(msg: Message) -> None:
    body = encode(msg)
    assert decode(bytearray(body)) == decode(memoryview(body)) == decode(body.decode()) == msg


@QUICK
@given(msg=any_message)
def test_absent_optionals_are_omitted_and_null_reads_as_absent(msg: Message) -> None:
    wire = _wire(msg)
    assert None not in wire.values()
    for f in dataclasses.fields(msg):
        if f.default is None:
            wire.setdefault(f.name, None)  # an explicit null for every absent optional
    assert decode(orjson.dumps(wire)) == msg


@QUICK
@given(
    msg=any_message,
    extra=st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=4),
)
def test_unknown_fields_are_ignored(msg: Message, extra: dict[str, Any]) -> None:
    wire = _wire(msg)
    known = {f.name for f in dataclasses.fields(msg)} | {"v", "type"}
    wire.update({k: v for k, v in extra.items() if k not in known})
    assert decode(orjson.dumps(wire)) == msg


@QUICK
@given(
    cost=link_costs(),
    name=st.sampled_from([f.name for f in dataclasses.fields(LinkCost)]),
    value=st.none() | json_values | finite | counts | node_names | uuids,
    mutate=st.booleans(),
)
def test_link_cost_fast_path_agrees_with_checked_path(
    cost: LinkCost, name: str, value: Any, mutate: bool
) -> None:
    # decode takes a shortcut for plainly valid link costs; it must agree with _build.
    wire = _wire(cost) | ({name: value} if mutate else {})
    try:
        built = codec._build(LinkCost, codec._WIRE["network.cost"][1], wire)
    except MessageError:
        assert codec._link_cost_fast(wire) is None
        return
    fast = codec._link_cost_fast(wire)
    assert fast is None or fast == built
    assert decode(_dumps(wire)) == built


def test_link_cost_fast_path_is_taken_for_a_plain_body() -> None:
    body = (CONTRACT_DIR / "network.cost.json").read_bytes()
    cost = decode(body)  # the first sight of a node name goes the checked way
    assert codec._link_cost_fast(orjson.loads(body)) == cost


# -- garbage in: MessageError, never anything else --------------------------------------------


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_message_error(body: bytes) -> None:
    _decoded_or_error(body)


@settings(max_examples=200, deadline=None)
@given(body=st.text(max_size=100))
def test_arbitrary_text_raises_only_message_error(body: str) -> None:
    _decoded_or_error(body)  # lone surrogates included


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_arbitrary_json_raises_only_message_error(value: Any) -> None:
    _decoded_or_error(orjson.dumps(value))


@settings(max_examples=120, deadline=None)
@given(
    body=st.fixed_dictionaries(
        {"v": st.just(1), "type": st.sampled_from(sorted(MESSAGE_TYPES))},
        optional={
            name: json_values
            for cls in MESSAGE_TYPES.values()
            for name in (f.name for f in dataclasses.fields(cls))
        },
    )
)
def test_known_types_with_arbitrary_field_values_raise_only_message_error(
    body: dict[str, Any],
) -> None:
    _decoded_or_error(orjson.dumps(body))


def _kind(hint: Any) -> str:
    """The JSON kind a field accepts: str, int, float, bool or object."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0] if typing.get_origin(hint) is not Literal else hint
    if typing.get_origin(base) is Literal:
        return "str"
    if base is TransferError:
        return "object"
    if typing.get_origin(base) is tuple:
        return "array"
    return {str: "str", int: "int", float: "float", bool: "bool"}[base]


FIELD_KINDS: dict[type[Any], dict[str, str]] = {
    cls: {f.name: _kind(typing.get_type_hints(cls)[f.name]) for f in dataclasses.fields(cls)}
    for cls in MESSAGE_TYPES.values()
}
WRONG_KIND: dict[str, list[Any]] = {
    "str": [0, 1.5, True, [], {}],
    "int": ["1", 1.5, 2.0, True, False, [], {}],
    "float": ["1.0", "NaN", "Infinity", True, [], {}],
    "bool": [0, 1, "true", [], {}],
    "object": [0, "auth", True, []],
    "array": [0, "16", True, {}],
}
HUGE: dict[str, list[Any]] = {
    "str": ["x" * (MAX_PATH_LEN + 1)],
    "int": [2**63, 2**64 - 1, 2**64, 10**30],  # the last two reach the reader as floats
    "float": [],
    "bool": [],
    "object": [],
    "array": [],
}


def _message_and_field(kinds: Callable[[str], bool]) -> st.SearchStrategy[tuple[Message, str]]:
    """A valid message and one of its fields (present or not) whose kind passes ``kinds``."""

    def pick(msg: Message) -> st.SearchStrategy[tuple[Message, str]]:
        names = sorted(n for n, k in FIELD_KINDS[type(msg)].items() if kinds(k))
        return st.tuples(st.just(msg), st.sampled_from(names))

    return any_message.flatmap(pick)


@QUICK
@given(data=st.data(), picked=_message_and_field(lambda kind: True))
def test_a_field_of_the_wrong_json_kind_is_named(
    data: st.DataObject, picked: tuple[Message, str]
) -> None:
    msg, name = picked
    kind = FIELD_KINDS[type(msg)][name]
    wrong = data.draw(st.sampled_from(WRONG_KIND[kind]), label="wrong")
    exc = _error_of(orjson.dumps(_wire(msg) | {name: wrong}))
    assert exc.field == name, str(exc)


@QUICK
@given(data=st.data(), picked=_message_and_field(lambda kind: kind in ("str", "int")))
def test_a_huge_value_is_named(data: st.DataObject, picked: tuple[Message, str]) -> None:
    msg, name = picked
    huge = data.draw(st.sampled_from(HUGE[FIELD_KINDS[type(msg)][name]]), label="huge")
    exc = _error_of(_dumps(_wire(msg) | {name: huge}))
    assert exc.field == name, str(exc)


@QUICK
@given(
    picked=_message_and_field(lambda kind: kind in ("int", "float")),
    negative=st.sampled_from([-1, -1.5, -1e308, -(2**63), -(2**70)]),
)
def test_a_negative_number_is_accepted_only_where_it_makes_sense(
    picked: tuple[Message, str], negative: float
) -> None:
    msg, name = picked
    result = _decoded_or_error(_dumps(_wire(msg) | {name: negative}))
    if name in {"a", "b", "c", "r2"}:  # polynomial coefficients and R² may be negative
        assert not isinstance(result, MessageError), str(result)
    else:
        assert isinstance(result, MessageError)
        assert result.field == name, str(result)


@QUICK
@given(picked=_message_and_field(lambda kind: True))
def test_a_removed_field_is_named_when_required(picked: tuple[Message, str]) -> None:
    msg, name = picked
    wire = _wire(msg)
    wire.pop(name, None)
    field = next(f for f in dataclasses.fields(msg) if f.name == name)
    required = name in ("id", "ts") or (
        field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    )
    if name == "error" and isinstance(msg, TransferResult) and not msg.ok:
        required = True
    if isinstance(msg, ProfileResult) and (
        (name == "reason" and not msg.ok) or (name == "points" and msg.ok)
    ):
        required = True
    result = _decoded_or_error(orjson.dumps(wire))
    if required:
        assert isinstance(result, MessageError)
        assert result.field == name, str(result)
    else:
        assert not isinstance(result, MessageError), str(result)


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        (2, "newer"),
        (99, "newer"),
        (2**64 - 1, "newer"),
        (0, "must be 1"),
        (-1, "must be 1"),
        ("1", "integer"),
        (1.0, "integer"),
        (True, "integer"),
        (None, "missing"),
    ],
)
def test_any_version_but_1_is_refused(version: Any, reason: str) -> None:
    wire = orjson.loads((CONTRACT_DIR / "resource.json").read_bytes()) | {"v": version}
    exc = _error_of(orjson.dumps(wire))
    assert exc.field == "v"
    assert reason in str(exc)


def test_a_missing_version_is_refused() -> None:
    wire = orjson.loads((CONTRACT_DIR / "resource.json").read_bytes())
    del wire["v"]
    assert _error_of(orjson.dumps(wire)).field == "v"


@pytest.mark.parametrize("type_name", ["resources", "", "network.batch", "x" * 10_000, 5, None])
def test_an_unknown_type_is_refused(type_name: Any) -> None:
    exc = _error_of(orjson.dumps({"v": 1, "type": type_name, "id": UUID, "ts": 1.0}))
    assert exc.field == "type"
    assert len(str(exc)) < 300


def test_a_body_of_another_type_than_expected_is_refused() -> None:
    body = (CONTRACT_DIR / "resource.json").read_bytes()
    exc = _error_of_expected(body, LinkCost)
    assert exc.field == "type"
    assert "'network.cost'" in str(exc)
    assert "'resource'" in str(exc)


def _error_of_expected(body: bytes, expected: type[Any]) -> MessageError:
    with pytest.raises(MessageError) as info:
        decode(body, expected)
    return info.value


@pytest.mark.parametrize(
    "body",
    [
        *(b"", b" ", b"{", b"[]", b"null", b"1", b'"text"', b"\xff\xfe", b"NaN"),
        *(b'{"v":1,"a":NaN}', b'{"v": 1e400}', b"[" * 5000, b'{"v":1,"type":"resource"} x'),
    ],
)
def test_bodies_that_are_not_json_objects_are_refused(body: bytes) -> None:
    exc = _error_of(body)
    assert exc.field is None
    assert "JSON" in str(exc)


def test_a_body_that_is_not_bytes_or_text_is_refused() -> None:
    assert _error_of(12345).field is None


# -- field rules, one by one -------------------------------------------------------------------

RESOURCE = orjson.loads((CONTRACT_DIR / "resource.json").read_bytes())
COST = orjson.loads((CONTRACT_DIR / "network.cost.json").read_bytes())
REQUEST = orjson.loads((CONTRACT_DIR / "transfer.request.json").read_bytes())
RESULT_OK = orjson.loads((CONTRACT_DIR / "transfer.result.ok.json").read_bytes())
RESULT_ERROR = orjson.loads((CONTRACT_DIR / "transfer.result.error.json").read_bytes())
PROGRESS = orjson.loads((LOCAL_CONTRACT / "transfer.progress.json").read_bytes())

BAD_FIELDS = [
    (RESOURCE, "cpu_percent", 100.5),
    (RESOURCE, "cpu_percent", -0.1),
    (RESOURCE, "memory_percent", 101),
    (RESOURCE, "cpu_count", 0),
    (RESOURCE, "cpu_count", True),
    (RESOURCE, "memory_total_bytes", -1),
    (RESOURCE, "memory_available_bytes", 1.5),
    (RESOURCE, "ssh_port", 0),
    (RESOURCE, "ssh_port", 65536),
    (RESOURCE, "host", ""),
    (RESOURCE, "host", "-oProxyCommand=evil"),
    (RESOURCE, "host", "a host"),
    (RESOURCE, "node", "node.1"),
    (RESOURCE, "node", "node 1"),
    (RESOURCE, "node", "node1\n"),
    (RESOURCE, "node", ""),
    (RESOURCE, "node", "n" * (MAX_NODE_NAME_LEN + 1)),
    (RESOURCE, "node", "nöde"),
    (RESOURCE, "id", "not-a-uuid"),
    (RESOURCE, "id", UUID + "0"),
    (RESOURCE, "ts", -1.0),
    (COST, "src", "a.b"),
    (COST, "dst", "*"),
    (COST, "samples", -1),
    (COST, "min_kbit", -8.0),
    (COST, "max_kbit", 1.0),  # below min_kbit
    (COST, "model", "cubic"),
    (COST, "model", ""),
    (REQUEST, "port", 0),
    (REQUEST, "port", 70000),
    (REQUEST, "port", 22.0),
    (REQUEST, "host", ""),
    (REQUEST, "host", "h" * (MAX_NAME_LEN + 1)),
    (REQUEST, "user", ""),
    (REQUEST, "user", "-l"),
    (REQUEST, "user", "ju\x00piter"),
    (REQUEST, "password", ""),
    (REQUEST, "password", "p" * (MAX_PATH_LEN + 1)),
    (REQUEST, "password", "sec\x00ret"),
    (REQUEST, "source", ""),
    (REQUEST, "source", "/data/a\x00b"),
    (REQUEST, "destination", ""),
    (REQUEST, "destination", "/" * (MAX_PATH_LEN + 1)),
    (REQUEST, "engine", "rsync"),
    (REQUEST, "idempotency_key", "k" * (MAX_NAME_LEN + 1)),
    (REQUEST, "deadline", -5),
    (RESULT_OK, "request_id", "node1"),
    (RESULT_OK, "node", "node/1"),
    (RESULT_OK, "ok", 1),
    (RESULT_OK, "bytes", -1),
    (RESULT_OK, "seconds", -0.5),
    (RESULT_OK, "attempts", -1),
    (RESULT_OK, "error", {"kind": "auth", "message": "ok=true with an error"}),
    (RESULT_ERROR, "error", "auth"),
    (RESULT_ERROR, "ok", "false"),
    (PROGRESS, "request_id", "job-7"),
    (PROGRESS, "node", "node 1"),
    (PROGRESS, "bytes_done", -1),
    (PROGRESS, "bytes_done", 1048577),  # above bytes_total
    (PROGRESS, "bytes_done", 1.5),
    (PROGRESS, "bytes_total", -1),
    (PROGRESS, "bytes_total", "1048576"),
]


@pytest.mark.parametrize(
    ("base", "name", "value"), BAD_FIELDS, ids=[f"{b['type']}-{n}" for b, n, _ in BAD_FIELDS]
)
def test_a_bad_field_is_named(base: dict[str, Any], name: str, value: Any) -> None:
    exc = _error_of(orjson.dumps(base | {name: value}))
    assert exc.field == name, str(exc)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ok": False, "error": None}, "error"),
        ({"error": {"message": "no kind"}}, "error.kind"),
        ({"error": {"kind": "oops", "message": "x"}}, "error.kind"),
        ({"error": {"kind": "auth", "message": 42}}, "error.message"),
        ({"error": {"kind": "auth", "message": "m" * 5000}}, "error.message"),
    ],
)
def test_the_error_object_is_checked(change: dict[str, Any], field: str) -> None:
    exc = _error_of(orjson.dumps(RESULT_ERROR | change))
    assert exc.field == field, str(exc)


def test_a_failed_result_without_message_text_is_accepted() -> None:
    result = decode(orjson.dumps(RESULT_ERROR | {"error": {"kind": "timeout"}}), TransferResult)
    assert result.error == TransferError("timeout", "")


@pytest.mark.parametrize(
    ("base", "name", "value"),
    [
        (RESOURCE, "node", "n" * MAX_NODE_NAME_LEN),
        (RESOURCE, "host", "fe80::1%eth0"),
        (RESOURCE, "id", UUID.upper()),
        (COST, "a", -3.5),
        (COST, "r2", -0.2),
        (COST, "c", 42),
        (COST, "min_kbit", 80000.0),  # equal to max_kbit: a single probed size
        (REQUEST, "source", "/data/with spaces; $(rm -rf) 'quotes' \"too\""),
        (REQUEST, "destination", "/" * MAX_PATH_LEN),
        (REQUEST, "password", "p" * MAX_PATH_LEN),
        (REQUEST, "user", "Jupiter.Service@CORP"),
        (REQUEST, "port", 65535),
        (RESULT_OK, "attempts", 0),
        (RESULT_OK, "bytes", MAX_INT),
        (PROGRESS, "bytes_done", 1048576),  # equal to bytes_total: the copy is complete
        (PROGRESS, "bytes_done", 0),
        (PROGRESS, "bytes_total", None),  # unknown size: any count
    ],
)
def test_edge_values_are_accepted(base: dict[str, Any], name: str, value: Any) -> None:
    msg = decode(orjson.dumps(base | {name: value}))
    assert getattr(msg, name) == value


def test_integers_are_read_as_floats_where_floats_are_expected() -> None:
    cost = decode(orjson.dumps(COST | {"a": 0, "c": 42, "min_kbit": 8}), LinkCost)
    assert (type(cost.a), type(cost.c), type(cost.min_kbit)) == (float, float, float)
    assert b'"c":42.0' in encode(cost)


def test_request_defaults_port_22_and_idempotency_key_to_id() -> None:
    wire = {k: v for k, v in REQUEST.items() if k not in ("port", "idempotency_key")}
    request = decode(orjson.dumps(wire), TransferRequest)
    assert (request.port, request.idempotency_key) == (22, request.id)
    assert (request.engine, request.deadline) == (None, None)


# -- construction in Python validates too --------------------------------------------------


def _cost(**change: Any) -> LinkCost:
    fields: dict[str, Any] = {"src": "node1", "dst": "node2", "a": 1e-9, "b": 1e-3, "c": 42.0}
    fields |= {"samples": 3, "r2": 0.9, "min_kbit": 8.0, "max_kbit": 80.0}
    return LinkCost(**(fields | change))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("a", math.nan),
        ("b", math.inf),
        ("c", -math.inf),
        ("r2", math.nan),
        ("samples", True),
        ("samples", 2**64),
        ("samples", 3.0),
        ("a", 10**400),
        ("a", "1.0"),
        ("a", None),
        ("src", "node 1"),
        ("src", 7),
        ("id", "x"),
        ("ts", math.nan),
        ("model", ["quadratic"]),
        ("min_kbit", -1.0),
    ],
)
def test_invalid_objects_cannot_be_built(name: str, value: Any) -> None:
    with pytest.raises(MessageError) as info:
        _cost(**{name: value})
    assert info.value.field == name


def test_built_messages_get_a_uuid_and_a_timestamp() -> None:
    first, second = _cost(), _cost()
    assert first.id != second.id
    assert re.fullmatch(r"[0-9a-f-]{36}", first.id)
    assert abs(first.ts - second.ts) < 60


def test_numpy_numbers_are_stored_as_python_numbers() -> None:
    cost = _cost(a=np.float64(1e-9), c=np.float32(42.0), samples=np.int64(3))
    assert (type(cost.a), type(cost.c), type(cost.samples)) == (float, float, int)
    assert decode(encode(cost)) == cost


def test_messages_are_frozen() -> None:
    cost = _cost()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cost.a = 2.0  # type: ignore[misc]


def test_transfer_result_needs_an_error_exactly_when_not_ok() -> None:
    common: dict[str, Any] = dict(request_id=UUID, node="n1", bytes=0, seconds=0.0, attempts=1)
    with pytest.raises(MessageError, match="required") as info:
        TransferResult(ok=False, **common)
    assert info.value.field == "error"
    with pytest.raises(MessageError, match="absent") as info:
        TransferResult(ok=True, error=TransferError("remote", "x"), **common)
    assert info.value.field == "error"
    with pytest.raises(MessageError) as info:
        TransferError("bogus", "x")  # type: ignore[arg-type]
    assert info.value.field == "error.kind"


def test_encode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(TypeError):
        encode({"v": 1})  # type: ignore[arg-type]


# -- secrets ----------------------------------------------------------------------------------

SECRET = "hunter2-Secret"


@QUICK
@given(request=transfer_requests, password=passwords)
def test_password_never_shows_in_repr_or_str(request: TransferRequest, password: str) -> None:
    assume(password not in repr(dataclasses.replace(request, password=None)))
    request = dataclasses.replace(request, password=password)
    assert password not in repr(request)
    assert password not in str(request)


@pytest.mark.parametrize(
    "password", [SECRET + "\x00", SECRET * 1000, ""], ids=["nul", "long", "empty"]
)
def test_password_errors_do_not_echo_the_password(password: str) -> None:
    exc = _error_of(orjson.dumps(REQUEST | {"password": password}))
    assert exc.field == "password"
    assert SECRET not in str(exc)


def test_redact_removes_the_password() -> None:
    body = orjson.dumps(REQUEST | {"password": SECRET})
    clean = redact(body)
    assert SECRET.encode() not in clean
    request = decode(clean, TransferRequest)
    assert request.password is None
    assert dataclasses.replace(decode(body, TransferRequest), password=None) == request


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe\x00", b"", b"[1, 2]", b'{"v": 1, "type": "resource"}', b"null"],
)
def test_redact_leaves_bodies_without_a_password_unchanged(body: bytes) -> None:
    assert redact(body) == body


def test_redact_scrubs_a_password_from_a_body_that_is_not_json() -> None:
    body = b'{"v": 1, "password": "' + SECRET.encode() + b'\\" still", "user": "x"'
    clean = redact(body)
    assert SECRET.encode() not in clean
    assert clean.endswith(b'"user": "x"')


def test_redact_removes_nested_passwords() -> None:
    clean = redact(orjson.dumps({"jobs": [{"password": SECRET}]}))
    assert orjson.loads(clean) == {"jobs": [{}]}


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200) | json_values.map(orjson.dumps))
def test_redact_never_raises(body: bytes) -> None:
    assert isinstance(redact(body), bytes)


@QUICK
@given(request=transfer_requests, password=passwords)
def test_redacted_requests_carry_no_password(request: TransferRequest, password: str) -> None:
    body = encode(dataclasses.replace(request, password=password))
    clean = redact(body)
    assert b'"password"' not in clean
    assert decode(clean) == dataclasses.replace(request, password=None)
