"""Framing: frames read however the bytes arrive, lenient headers, and recovery after garbage or a
wrong Content-Length."""
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kvsplice.server.framing import Framer, Garbage

A = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "a", "params": {"s": "x\ny"}}).encode()
B = json.dumps({"jsonrpc": "2.0", "method": "b", "params": {"s": "Content-Length: 5\r\n"}}).encode()


def frame(body: bytes, header: bytes = b"Content-Length: %d\r\n\r\n") -> bytes:
    return header % len(body) + body


def read(*chunks: bytes) -> list:
    framer = Framer()
    return [item for chunk in chunks for item in framer.feed(chunk)]


@settings(max_examples=100)
@given(st.lists(st.integers(0, 400), max_size=8))
def test_frames_come_out_whole_however_the_bytes_are_cut(cuts):
    typed = b"Content-Length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n"
    stream = frame(A) + frame(B, typed)
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    assert read(*chunks) == [A, B]


def test_header_names_in_any_case_with_or_without_a_space_and_lf_only_lines():
    stream = frame(A, b"content-length: %d\r\n\r\n") + frame(B, b"Content-Length:%d\n\n") + \
        frame(A, b"CONTENT-LENGTH :\t%d \n\r\n")
    assert read(stream) == [A, B, A]


def test_stray_blank_lines_between_frames_are_skipped():
    assert read(frame(A) + b"\r\n\n" + frame(B)) == [A, B]


def test_garbage_is_skipped_to_the_next_content_length_even_mid_line():
    items = read(b"hello\r\nworld}}" + frame(A) + b"Content-Length: x\r\n\r\n{}" + frame(B))
    assert items == [Garbage(b"hello\r\nworld}}"), A, Garbage(b"Content-Length: x\r\n\r\n{}"), B]


def test_garbage_between_headers_drops_the_header_block():
    assert read(b"Content-Length: 3\r\nnot a header\r\n\r\n{}" + frame(A)) == [Garbage(b"not a header\r\n\r\n{}"), A]


def test_a_too_short_content_length_gives_a_cut_body_then_garbage_then_the_next_frame():
    items = read(b"Content-Length: %d\r\n\r\n" % (len(A) - 5) + A + frame(B))
    assert items == [A[:-5], Garbage(A[-5:]), B]


def test_a_too_long_content_length_ends_at_the_next_header():
    cut = b"Content-Length: %d\r\n\r\n" % (len(A) + 100) + b"[not json" + frame(B)
    assert read(cut) == [b"[not json", B]


def test_a_too_long_content_length_ends_where_the_json_object_does():
    framer = Framer()
    assert framer.feed(b"Content-Length: %d\r\n\r\n" % (len(A) + 100) + A[:-1]) == []
    assert framer.feed(A[-1:]) == [A]
    assert framer.feed(frame(B)) == [B]


def test_a_body_is_not_cut_where_only_part_of_it_is_an_object():
    body = json.dumps({"a": {"b": 1}, "c": 2}).encode()
    framer = Framer()
    assert framer.feed(frame(body)[:-7]) == []  # ends with the inner object's "}"
    assert framer.feed(frame(body)[-7:]) == [body]
