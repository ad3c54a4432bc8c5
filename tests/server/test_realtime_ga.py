"""OpenAI Realtime transcription, GA shape beside beta: the sans-I/O session
(session shapes, formats, turn detection, speech and item events), the G.711
tables, and the ``openai`` package's GA realtime client against a loopback
server sending pcm16 and µ-law audio.

GA events are checked against the ``openai`` package's own pydantic types,
which name the fields OpenAI's API uses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import asrserve
from asrserve.audio import resample
from asrserve.audio_codecs import ALAW_TABLE, ULAW_TABLE, g711_decode
from asrserve.config import EndpointConfig, ServerConfig
from asrserve.core.events import Result
from asrserve.server.app import AsrServer
from asrserve.server.protocol import Audio, Command, Flush, Send, SessionConfig, Start
from asrserve.server.realtime import (
    MAX_ITEMS,
    SEMANTIC_SILENCE_S,
    RealtimeSession,
    opening_shape,
)
from tests.conftest import BUILTIN, read_wav

TIMEOUT_S = 45
WAV = BUILTIN / "test_wavs" / "synth-0000.wav"
TRANSCRIPTION = "conversation.item.input_audio_transcription"
QUIET = base64.b64encode(bytes(480)).decode()  # 10 ms of pcm16 silence at 24 kHz


# --- helpers ------------------------------------------------------------------
def events(cmds: list[Command]) -> list[dict[str, Any]]:
    return [json.loads(c.data) for c in cmds if isinstance(c, Send)]


def kinds(cmds: list[Command]) -> list[str]:
    return [e["type"] for e in events(cmds)]


def send(session: RealtimeSession, event: dict[str, Any]) -> list[Command]:
    return session.receive(json.dumps(event))


def ga_update(**audio_input: Any) -> dict[str, Any]:
    return {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": audio_input}},
    }


def beta_update(**session: Any) -> dict[str, Any]:
    return {"type": "transcription_session.update", "session": session}


def result(text: str, *, start: float = 0.0, first_token: float | None = None) -> Result:
    stamps = [first_token] if first_token is not None else []
    return Result(text=text, timestamps=stamps, start_time=start)


def ulaw_encode(x: npt.NDArray[np.int16]) -> bytes:
    """The reference G.711 µ-law encoder (Sun's ``linear2ulaw``), sample by sample."""
    out = bytearray()
    for s in x.tolist():
        sign = 0x80 if s < 0 else 0
        mag = min(abs(s), 32635) + 0x84
        exponent = mag.bit_length() - 8
        mantissa = (mag >> (exponent + 3)) & 0x0F
        out.append(~(sign | (exponent << 4) | mantissa) & 0xFF)
    return bytes(out)


def alaw_encode(x: npt.NDArray[np.int16]) -> bytes:
    """The reference G.711 A-law encoder (Sun's ``linear2alaw``), sample by sample."""
    ends = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
    out = bytearray()
    for s in x.tolist():
        v = s >> 3
        mask = 0xD5 if v >= 0 else 0x55
        if v < 0:
            v = -v - 1
        seg = next((i for i, end in enumerate(ends) if v <= end), 8)
        if seg == 8:
            out.append(0x7F ^ mask)
            continue
        mantissa = (v >> 1) & 0x0F if seg < 2 else (v >> seg) & 0x0F
        out.append(((seg << 4) | mantissa) ^ mask)
    return bytes(out)


def to_int16(x: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


# --- G.711 tables ---------------------------------------------------------------
def test_g711_tables_hold_the_standard_values() -> None:
    assert ULAW_TABLE[0xFF] == 0
    assert ULAW_TABLE[0x7F] == 0
    assert ULAW_TABLE[0x00] == -32124
    assert ULAW_TABLE[0x80] == 32124
    assert ALAW_TABLE[0xD5] == 8
    assert ALAW_TABLE[0x55] == -8
    assert ALAW_TABLE[0xAA] == 32256
    assert ALAW_TABLE[0x2A] == -32256
    for table in (ULAW_TABLE, ALAW_TABLE):
        positive = np.sort(table[table > 0])
        assert np.unique(positive).size == 127 + (table is ALAW_TABLE)  # a single zero each
        assert (table.astype(np.int32) + np.roll(table, 128) == 0).all()  # sign bit: mirror
    samples = g711_decode(bytes([0xFF, 0x00, 0x80]), "ulaw")
    assert samples.dtype == np.float32
    assert samples.tolist() == [0.0, -32124 / 32768, 32124 / 32768]
    with pytest.raises(ValueError, match="ulaw"):
        g711_decode(b"\x00", "mulaw")


@pytest.mark.parametrize(("law", "encode"), [("ulaw", ulaw_encode), ("alaw", alaw_encode)])
def test_g711_round_trips_through_a_reference_encoder(law: str, encode: Any) -> None:
    table = ULAW_TABLE if law == "ulaw" else ALAW_TABLE
    codes = bytes(range(256))
    decoded = table[np.frombuffer(codes, np.uint8)]
    again = np.frombuffer(encode(decoded), np.uint8)
    assert (table[again] == decoded).all()  # every level encodes back to itself
    if law == "alaw":
        assert bytes(again) == codes  # A-law has no second zero: codes too
    x = np.random.default_rng(7).integers(-32768, 32768, 20_000).astype(np.int16)
    y = g711_decode(encode(x), law) * 32768
    err = np.abs(y - x.astype(np.float64))
    assert (err <= 0.035 * np.abs(x) + 16).all(), float((err - 0.035 * np.abs(x)).max())


def test_g711_tables_match_audioop_where_it_exists() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in Python 3.13
    codes = bytes(range(256))
    assert (np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2") == ULAW_TABLE).all()
    assert (np.frombuffer(audioop.alaw2lin(codes, 2), "<i2") == ALAW_TABLE).all()


# --- the sans-I/O session: shapes ---------------------------------------------------
def test_which_shape_a_connection_opens_in() -> None:
    assert opening_shape({"intent": "transcription"}, {}) == "beta"
    assert opening_shape({"model": "m"}, {"OpenAI-Beta": "realtime=v1"}) == "beta"
    assert opening_shape({}, {"OpenAI-Beta": "assistants=v2, realtime=v1"}) == "beta"
    assert opening_shape({"model": "m"}, {}) == "ga"
    assert opening_shape({}, {"OpenAI-Beta": "assistants=v2"}) == "ga"
    # beta is the default of the class (existing callers), GA on request
    assert kinds(RealtimeSession(SessionConfig(), "m").opening()) == [
        "transcription_session.created"
    ]
    created = events(RealtimeSession(SessionConfig(), "m", "ga").opening())[0]
    assert created["type"] == "session.created"
    session = created["session"]
    assert session["type"] == "transcription"
    assert session["object"] == "realtime.transcription_session"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["transcription"]["model"] == "m"
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"


def test_ga_events_validate_against_the_openai_types() -> None:
    types = pytest.importorskip("openai.types.realtime")
    from openai.types.realtime.realtime_server_event import ConversationItemRetrieved

    s = RealtimeSession(SessionConfig(), "m", "ga")
    types.SessionCreatedEvent.model_validate(events(s.opening())[0], strict=False)
    update = ga_update(
        format={"type": "audio/pcmu"},
        transcription={"model": "tiny", "language": "en", "prompt": "p"},
        turn_detection={"type": "semantic_vad", "eagerness": "high"},
        noise_reduction={"type": "near_field"},
    )
    updated = events(send(s, update))[0]
    parsed = types.SessionUpdatedEvent.model_validate(updated)
    assert isinstance(parsed.session, types.RealtimeTranscriptionSessionCreateRequest)
    audio_input = parsed.session.audio.input
    assert audio_input.format.type == "audio/pcmu"
    assert audio_input.turn_detection.type == "semantic_vad"
    assert audio_input.turn_detection.eagerness == "high"
    assert audio_input.transcription.model == "tiny"
    assert audio_input.noise_reduction is None  # accepted, not applied: not in effect
    send(s, {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\xff" * 80).decode()})
    out = events(s.result(result("HELLO", first_token=0.25), 0.5, final=False))
    out += events(s.result(result("HELLO WORLD"), 1.5, final=True))
    by_type = {e["type"]: e for e in out}
    types.InputAudioBufferSpeechStartedEvent.model_validate(
        by_type["input_audio_buffer.speech_started"]
    )
    types.InputAudioBufferSpeechStoppedEvent.model_validate(
        by_type["input_audio_buffer.speech_stopped"]
    )
    types.InputAudioBufferCommittedEvent.model_validate(by_type["input_audio_buffer.committed"])
    types.ConversationItemInputAudioTranscriptionDeltaEvent.model_validate(
        by_type[f"{TRANSCRIPTION}.delta"]
    )
    done = types.ConversationItemInputAudioTranscriptionCompletedEvent.model_validate(
        by_type[f"{TRANSCRIPTION}.completed"]
    )
    assert done.usage.type == "duration"
    assert done.usage.seconds == 1.5
    item = done.item_id
    got = events(send(s, {"type": "conversation.item.retrieve", "item_id": item}))[0]
    retrieved = ConversationItemRetrieved.model_validate(got)
    assert retrieved.item.role == "user"
    assert retrieved.item.content[0].type == "input_audio"
    assert retrieved.item.content[0].transcript == "HELLO WORLD"
    deleted = events(send(s, {"type": "conversation.item.delete", "item_id": item}))[0]
    types.ConversationItemDeletedEvent.model_validate(deleted)
    missing = events(send(s, {"type": "conversation.item.retrieve", "item_id": item}))[0]
    error = types.RealtimeErrorEvent.model_validate(missing)
    assert error.error.code == "item_not_found"
    assert error.error.param == "item_id"


def test_an_update_of_the_other_shape_switches_the_session_to_it() -> None:
    s = RealtimeSession(SessionConfig(), "m")  # opened beta
    beta = {"type": "transcription_session.update", "session": {"input_audio_format": "g711_alaw"}}
    updated = events(send(s, beta))[0]
    assert updated["type"] == "transcription_session.updated"
    assert updated["session"]["input_audio_format"] == "g711_alaw"
    assert "audio" not in updated["session"]
    updated = events(send(s, ga_update(transcription={"language": "de"})))[0]
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcma"}
    assert updated["session"]["audio"]["input"]["transcription"]["language"] == "de"
    assert s.config.sample_rate == 8000
    back = {"type": "transcription_session.update", "session": {}}
    assert kinds(send(s, back)) == ["transcription_session.updated"]
    # beta completed events stay as they were: no usage
    s.receive(json.dumps({"type": "input_audio_buffer.append", "audio": "1Q=="}))
    done = events(s.result(result("A"), 1.0, final=True))[-1]
    assert done["type"] == f"{TRANSCRIPTION}.completed"
    assert "usage" not in done


# --- formats -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("update", "rate", "law"),
    [
        (beta_update(input_audio_format="pcm16"), 24000, None),
        (beta_update(input_audio_format="g711_ulaw"), 8000, "ulaw"),
        (beta_update(input_audio_format="g711_alaw"), 8000, "alaw"),
        (ga_update(format={"type": "audio/pcm", "rate": 24000}), 24000, None),
        (ga_update(format={"type": "audio/pcm"}), 24000, None),
        (ga_update(format={"type": "audio/pcmu"}), 8000, "ulaw"),
        (ga_update(format={"type": "audio/pcma"}), 8000, "alaw"),
    ],
)  # fmt: skip
def test_audio_formats_decode_at_their_rate(
    update: dict[str, Any], rate: int, law: str | None
) -> None:
    s = RealtimeSession(SessionConfig(), "m")
    assert kinds(send(s, update))[0].endswith("updated")
    raw = bytes([0x00, 0x7F, 0x80, 0xFF, 0xD5, 0x55])
    cmds = send(s, {"type": "input_audio_buffer.append", "audio": base64.b64encode(raw).decode()})
    start = next(c for c in cmds if isinstance(c, Start))
    audio = next(c for c in cmds if isinstance(c, Audio))
    assert start.config.sample_rate == rate
    want = (
        np.frombuffer(raw, "<i2").astype(np.float32) / 32768
        if law is None
        else (ULAW_TABLE if law == "ulaw" else ALAW_TABLE)[np.frombuffer(raw, np.uint8)] / 32768
    )
    np.testing.assert_array_equal(audio.samples, want.astype(np.float32))
    # the format is fixed once audio has started; the same format is no change
    other = "g711_alaw" if law == "ulaw" else "g711_ulaw"
    locked = events(
        send(s, {"type": "transcription_session.update", "session": {"input_audio_format": other}})
    )[0]
    assert locked["error"]["code"] == "session_locked"
    assert kinds(send(s, update))[0].endswith("updated")


@pytest.mark.parametrize(
    "update",
    [
        {"type": "transcription_session.update", "session": {"input_audio_format": "mp3"}},
        {"type": "transcription_session.update", "session": {"input_audio_format": None}},
        ga_update(format={"type": "audio/pcm", "rate": 16000}),
        ga_update(format={"type": "audio/opus"}),
        ga_update(format={"type": ["audio/pcm"]}),
        ga_update(format="pcm16"),
    ],
)
def test_unknown_formats_are_refused_naming_the_accepted_ones(update: dict[str, Any]) -> None:
    s = RealtimeSession(SessionConfig(), "m")
    update = {**update, "event_id": "u1"}
    err = events(send(s, update))[0]
    assert err["type"] == "error"
    assert err["error"]["code"] == "unsupported_format"
    assert err["error"]["event_id"] == "u1"
    message = err["error"]["message"]
    if update["type"] == "session.update":
        assert all(f in message for f in ("audio/pcm", "24000", "audio/pcmu", "audio/pcma"))
    else:
        assert all(f in message for f in ("pcm16", "g711_ulaw", "g711_alaw"))
    assert s.format == "pcm16"  # nothing changed


def test_ga_session_objects_are_checked() -> None:
    s = RealtimeSession(SessionConfig(), "m", "ga")
    bad = [
        ({"type": "session.update", "session": {"type": "realtime"}}, "unsupported_session_type"),
        ({"type": "session.update", "session": {"audio": 5}}, "invalid_event"),
        ({"type": "session.update", "session": {"audio": {"input": []}}}, "invalid_event"),
        ({"type": "session.update", "session": "x"}, "invalid_event"),
    ]
    for update, code in bad:
        assert events(send(s, update))[0]["error"]["code"] == code
    # nothing but the type: an update that changes nothing
    assert kinds(send(s, {"type": "session.update", "session": {"type": "transcription"}})) == [
        "session.updated"
    ]


# --- turn detection -------------------------------------------------------------------
def test_turn_detection_maps_to_endpoint_rules() -> None:
    s = RealtimeSession(SessionConfig(), "m", "ga")
    base = s.config.endpoint
    send(s, ga_update(turn_detection={"type": "server_vad", "silence_duration_ms": 700}))
    ep = s.config.endpoint
    assert ep.enabled
    assert ep.rule2.must_contain_nonsilence
    assert ep.rule2.min_trailing_silence == pytest.approx(0.7)
    assert ep.rule1 == base.rule1  # 2.4 s already waits longer
    assert ep.rule3 == base.rule3
    # a longer silence than rule 1's: rule 1 waits as long (else it would end items first)
    send(s, ga_update(turn_detection={"type": "server_vad", "silence_duration_ms": 3000}))
    assert s.config.endpoint.rule1.min_trailing_silence == pytest.approx(3.0)
    assert s.config.endpoint.rule2.min_trailing_silence == pytest.approx(3.0)
    for eagerness, silence in SEMANTIC_SILENCE_S.items():
        turn = {"type": "semantic_vad", "eagerness": eagerness}
        updated = events(send(s, ga_update(turn_detection=turn)))[0]
        assert updated["session"]["audio"]["input"]["turn_detection"] == turn
        assert s.config.endpoint.enabled
        assert s.config.endpoint.rule2.min_trailing_silence == pytest.approx(silence)
        assert s.config.endpoint.rule1 == base.rule1
    assert SEMANTIC_SILENCE_S["auto"] == SEMANTIC_SILENCE_S["medium"]
    assert SEMANTIC_SILENCE_S["high"] < SEMANTIC_SILENCE_S["medium"] < SEMANTIC_SILENCE_S["low"]
    updated = events(send(s, ga_update(turn_detection=None)))[0]
    assert updated["session"]["audio"]["input"]["turn_detection"] is None
    assert not s.config.endpoint.enabled
    # beta spells it the same way at the top of the session
    beta = {
        "type": "transcription_session.update",
        "session": {"turn_detection": {"type": "semantic_vad"}},
    }
    updated = events(send(s, beta))[0]
    assert updated["session"]["turn_detection"] == {"type": "semantic_vad", "eagerness": "auto"}
    for turn in ({"type": "semantic_vad", "eagerness": "eager"}, {"type": "x"}, "server_vad"):
        err = events(send(s, ga_update(turn_detection=turn)))[0]
        assert err["error"]["code"] in ("invalid_value", "unsupported_turn_detection")


def test_turn_detection_cannot_change_once_audio_has_started() -> None:
    s = RealtimeSession(SessionConfig(), "m", "ga")
    send(s, ga_update(turn_detection={"type": "semantic_vad", "eagerness": "medium"}))
    send(s, {"type": "input_audio_buffer.append", "audio": QUIET})
    err = events(send(s, ga_update(turn_detection=None)))[0]
    assert err["error"]["code"] == "session_locked"
    # the same rules spelled another way is no change
    same = {"type": "server_vad", "silence_duration_ms": 1000}
    assert kinds(send(s, ga_update(turn_detection=same))) == ["session.updated"]


# --- speech and item events ---------------------------------------------------------
def test_speech_events_frame_an_item_at_its_endpoint() -> None:
    s = RealtimeSession(SessionConfig(), "m", "ga")
    send(s, ga_update(turn_detection={"type": "server_vad", "silence_duration_ms": 500}))
    send(s, {"type": "input_audio_buffer.append", "audio": QUIET})
    assert s.result(result(""), 0.3, final=False) == []  # blanks: no speech yet
    first = events(s.result(result("HI", start=0.0, first_token=0.42), 0.6, final=False))
    assert [e["type"] for e in first] == [
        "input_audio_buffer.speech_started",
        f"{TRANSCRIPTION}.delta",
    ]
    assert first[0]["audio_start_ms"] == 420
    item = first[0]["item_id"]
    assert kinds(s.result(result("HI THERE", first_token=0.42), 0.9, final=False)) == [
        f"{TRANSCRIPTION}.delta"
    ]
    end = events(s.result(result("HI THERE", first_token=0.42), 1.75, final=True))
    assert [e["type"] for e in end] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        f"{TRANSCRIPTION}.completed",
    ]
    assert end[0]["audio_end_ms"] == 1750
    assert {e["item_id"] for e in end} == {item}
    # a silent segment (an endpoint on silence alone): nothing at all
    assert s.result(result(""), 4.5, final=True) == []
    # the next item: a final whose text came all at once still gets both speech events
    nxt = events(s.result(result("AGAIN", start=4.5, first_token=5.0), 6.0, final=True))
    assert [e["type"] for e in nxt] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        f"{TRANSCRIPTION}.delta",
        f"{TRANSCRIPTION}.completed",
    ]
    assert nxt[2]["previous_item_id"] == item
    assert nxt[0]["item_id"] != item


def test_a_commit_while_speaking_stops_speech_first() -> None:
    s = RealtimeSession(SessionConfig(), "m", "ga")
    send(s, ga_update(turn_detection={"type": "server_vad", "silence_duration_ms": 500}))
    pcm = base64.b64encode(np.zeros(2400, "<i2").tobytes()).decode()  # 0.1 s at 24 kHz
    for _ in range(10):
        send(s, {"type": "input_audio_buffer.append", "audio": pcm})
    s.result(result("HI", first_token=0.2), 0.5, final=False)
    out = send(s, {"type": "input_audio_buffer.commit"})
    assert kinds(out) == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed"]
    assert events(out)[0]["audio_end_ms"] == 1000
    assert isinstance(out[-1], Flush)
    assert kinds(s.result(result("HI"), 1.0, final=True)) == [f"{TRANSCRIPTION}.completed"]


def test_without_turn_detection_there_are_no_speech_events() -> None:
    s = RealtimeSession(SessionConfig(), "m", "ga")
    send(s, ga_update(turn_detection=None))
    send(s, {"type": "input_audio_buffer.append", "audio": QUIET})
    assert kinds(s.result(result("HI", first_token=0.1), 0.5, final=False)) == [
        f"{TRANSCRIPTION}.delta"
    ]
    assert kinds(send(s, {"type": "input_audio_buffer.commit"})) == ["input_audio_buffer.committed"]
    assert kinds(s.result(result("HI"), 1.0, final=True)) == [f"{TRANSCRIPTION}.completed"]


def test_items_are_kept_bounded_and_can_be_retrieved_and_deleted() -> None:
    s = RealtimeSession(SessionConfig(), "m")  # beta: the item events are the same
    send(s, {"type": "input_audio_buffer.append", "audio": QUIET})
    ids = []
    for i in range(MAX_ITEMS + 20):
        done = events(s.result(result(f"W{i}"), float(i + 1), final=True))[-1]
        ids.append(done["item_id"])
    assert len(set(ids)) == len(ids)
    gone = events(
        send(s, {"type": "conversation.item.retrieve", "item_id": ids[0], "event_id": "r"})
    )
    assert gone[0]["error"]["code"] == "item_not_found"
    assert gone[0]["error"]["event_id"] == "r"
    kept = events(send(s, {"type": "conversation.item.retrieve", "item_id": ids[-1]}))[0]
    assert kept["type"] == "conversation.item.retrieved"
    assert kept["item"]["id"] == ids[-1]
    assert kept["item"]["role"] == "user"
    assert kept["item"]["content"] == [{"type": "input_audio", "transcript": f"W{MAX_ITEMS + 19}"}]
    oldest_kept = ids[-MAX_ITEMS]
    assert kinds(send(s, {"type": "conversation.item.retrieve", "item_id": oldest_kept})) == [
        "conversation.item.retrieved"
    ]
    deleted = events(send(s, {"type": "conversation.item.delete", "item_id": oldest_kept}))[0]
    assert (deleted["type"], deleted["item_id"]) == ("conversation.item.deleted", oldest_kept)
    assert (
        events(send(s, {"type": "conversation.item.delete", "item_id": oldest_kept}))[0]["error"][
            "code"
        ]
        == "item_not_found"
    )
    for bad in (None, 5, ["x"]):
        err = events(send(s, {"type": "conversation.item.retrieve", "item_id": bad}))[0]
        assert err["error"]["code"] == "invalid_event"
    # an item can be retrieved between its commit and its transcript
    send(s, {"type": "input_audio_buffer.append", "audio": QUIET})
    committed = events(send(s, {"type": "input_audio_buffer.commit"}))[0]
    pending = events(
        send(s, {"type": "conversation.item.retrieve", "item_id": committed["item_id"]})
    )[0]
    assert pending["item"]["content"][0]["transcript"] is None
    s.result(result("LATE"), 200.0, final=True)
    done = events(send(s, {"type": "conversation.item.retrieve", "item_id": committed["item_id"]}))
    assert done[0]["item"]["content"][0]["transcript"] == "LATE"


# --- end to end: the openai package's GA client against the real server --------------------
@pytest.fixture(scope="module")
def recognizer() -> asrserve.Recognizer:
    return asrserve.load_model(BUILTIN, endpoint=EndpointConfig(enabled=False))


def _ga_client_run(base: str, fmt: dict[str, Any], chunks: list[bytes]) -> list[Any]:
    """Connect with the GA client (no intent: GA from the first event), set the
    format and server VAD, append the chunks, and read up to the transcript;
    then retrieve, delete and retrieve the item. Every server event, parsed."""
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    seen: list[Any] = []
    with client.realtime.connect(model="tiny-lstm") as conn:
        seen.append(conn.recv())
        session: Any = {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": fmt,
                    "transcription": {"model": "tiny-lstm", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
                }
            },
        }
        conn.session.update(session=session)
        seen.append(conn.recv())
        for chunk in chunks:
            conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        for event in conn:
            seen.append(event)
            if event.type == f"{TRANSCRIPTION}.completed":
                break
        item = seen[-1].item_id
        conn.conversation.item.retrieve(item_id=item)
        seen.append(conn.recv())
        conn.conversation.item.delete(item_id=item)
        seen.append(conn.recv())
        conn.conversation.item.retrieve(item_id=item, event_id="again")
        seen.append(conn.recv())
    return seen


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_the_openai_ga_client_transcribes_pcm16_and_ulaw(
    recognizer: asrserve.Recognizer,
) -> None:
    """pcm16 gives what ``asrserve transcribe`` gives for the clip; µ-law (8 kHz,
    telephone band) what it gives for the same µ-law audio decoded offline."""
    pytest.importorskip("openai")
    pytest.importorskip("websockets.sync.client")
    x16, rate = read_wav(WAV)
    silence_s = 1.5  # after the speech: server VAD (0.8 s) ends the item by itself
    want_pcm = " ".join(seg.text for seg in recognizer.transcribe_segments(str(WAV)))
    assert want_pcm
    x24 = np.concatenate([resample(x16, rate, 24000), np.zeros(int(24000 * silence_s), np.float32)])
    pcm = to_int16(x24).astype("<i2").tobytes()
    x8 = np.concatenate([resample(x16, rate, 8000), np.zeros(int(8000 * silence_s), np.float32)])
    ulaw = ulaw_encode(to_int16(x8))
    want_ulaw = recognizer.transcribe(g711_decode(ulaw, "ulaw"), 8000).text
    assert want_ulaw

    async def main() -> list[list[Any]]:
        async with asyncio.timeout(TIMEOUT_S):
            cfg = ServerConfig(port=0)
            async with AsrServer(recognizer, cfg, model_name="tiny-lstm") as server:
                base = f"http://127.0.0.1:{server.port}"
                # one after the other: the int8 demo model's results depend on the batch
                runs: list[list[Any]] = []
                for fmt, chunks in (
                    ({"type": "audio/pcm", "rate": 24000}, _chunks(pcm, 4800)),
                    ({"type": "audio/pcmu"}, _chunks(ulaw, 800)),
                ):
                    runs.append(await asyncio.to_thread(_ga_client_run, base, fmt, chunks))
                return runs

    runs = asyncio.run(main())
    for seen, want, fmt in zip(
        runs, (want_pcm, want_ulaw), ("audio/pcm", "audio/pcmu"), strict=True
    ):
        kinds_seen = [e.type for e in seen]
        assert kinds_seen[:2] == ["session.created", "session.updated"], kinds_seen
        assert seen[1].session.audio.input.format.type == fmt
        assert seen[1].session.audio.input.turn_detection.silence_duration_ms == 800
        body = kinds_seen[2:-3]
        order = [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            f"{TRANSCRIPTION}.completed",
        ]
        assert [k for k in body if k in order] == order, body
        assert "error" not in body
        by_type = {e.type: e for e in seen[2:-3]}
        started = by_type["input_audio_buffer.speech_started"]
        stopped = by_type["input_audio_buffer.speech_stopped"]
        completed = by_type[f"{TRANSCRIPTION}.completed"]
        assert started.item_id == stopped.item_id == completed.item_id
        assert 0 <= started.audio_start_ms < stopped.audio_end_ms
        assert stopped.audio_end_ms <= round(1000 * (x16.size / rate + silence_s))
        assert completed.transcript == want, (fmt, completed.transcript, want)
        retrieved, deleted, missing = seen[-3:]
        assert retrieved.type == "conversation.item.retrieved"
        assert retrieved.item.id == completed.item_id
        assert retrieved.item.content[0].transcript == want
        assert deleted.type == "conversation.item.deleted"
        assert deleted.item_id == completed.item_id
        assert missing.type == "error"
        assert missing.error.code == "item_not_found"
        assert missing.error.event_id == "again"


def test_a_raw_client_without_intent_is_answered_in_the_ga_shape(
    recognizer: asrserve.Recognizer,
) -> None:
    """No intent and no beta header: GA; the beta header keeps a client beta."""
    from websockets.asyncio.client import connect

    async def main() -> tuple[str, str]:
        async with asyncio.timeout(TIMEOUT_S):
            async with AsrServer(recognizer, ServerConfig(port=0), model_name="m") as server:
                url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=m"
                async with connect(url) as ws:
                    ga = json.loads(await ws.recv())["type"]
                headers = {"OpenAI-Beta": "realtime=v1"}
                async with connect(url, additional_headers=headers) as ws:
                    beta = json.loads(await ws.recv())["type"]
                return ga, beta

    assert asyncio.run(main()) == ("session.created", "transcription_session.created")
