"""The metadata rules: clamp warnings and the exact 4096-byte truncation."""

from __future__ import annotations

import json

import orjson
import pytest

from track.transforms.metadata import warn_metadata


def _compact(value) -> str:
    return orjson.dumps(value).decode()


def test_small_metadata_is_untouched():
    text = _compact({"a": 1, "_warnings": "mine"})
    assert warn_metadata(text, None) == (text, False)
    assert warn_metadata(None, None) == (None, False)


def test_clamped_adds_warning_and_original_timestamp_replacing_user_keys():
    text = _compact({"a": 1, "_warnings": "mine", "_original_timestamp": "x"})
    out, truncated = warn_metadata(text, "2099-01-01T00:00:00+02:00")
    assert not truncated
    assert json.loads(out) == {
        "a": 1,
        "_warnings": ["timestamp_clamped"],
        "_original_timestamp": "2099-01-01T00:00:00+02:00",
    }


def test_clamped_without_metadata_gets_an_object():
    out, _ = warn_metadata(None, "2099-01-01T00:00:00Z")
    assert json.loads(out) == {
        "_warnings": ["timestamp_clamped"],
        "_original_timestamp": "2099-01-01T00:00:00Z",
    }


@pytest.mark.parametrize("value_size", [100, 1000, 4000, 5000])
def test_truncation_keeps_the_longest_fitting_run_of_leading_keys(value_size):
    meta = {f"k{i}": "é" * (value_size // 2) for i in range(6)}
    text = _compact(meta)
    out, truncated = warn_metadata(text, None)
    if len(text.encode()) <= 4096:
        assert (out, truncated) == (text, False)
        return
    result = json.loads(out)
    assert truncated
    assert len(out.encode()) <= 4096
    assert result["_warnings"] == ["metadata_truncated"]
    assert result["_original_size"] == len(text.encode())
    kept = [k for k in result if not k.startswith("_")]
    assert kept == list(meta)[: len(kept)]
    # One more key would not have fitted.
    if len(kept) < len(meta):
        bigger = {k: meta[k] for k in list(meta)[: len(kept) + 1]} | {
            k: v for k, v in result.items() if k.startswith("_")
        }
        assert len(_compact(bigger).encode()) > 4096


@pytest.mark.parametrize(("extra", "kept"), [(0, ["a"]), (1, [])])
def test_truncation_boundary_is_exact(extra, kept):
    # The original size has four digits whatever the filler, so a result of exactly 4096 bytes
    # keeps key "a"; one byte more and it has to go.
    own = {"_warnings": ["metadata_truncated"], "_original_size": 9999}
    filler = 4096 - len(_compact({"a": "", **own}).encode()) + extra
    meta = {"a": "x" * filler, "b": "y" * 5000}
    out, truncated = warn_metadata(_compact(meta), None)
    assert truncated
    assert [k for k in json.loads(out) if not k.startswith("_")] == kept
    assert len(out.encode()) == (4096 if kept else len(_compact(own).encode()))


def test_clamped_and_oversized_get_both_warnings():
    meta = {"a": "x" * 5000}
    out, truncated = warn_metadata(_compact(meta), "2099-01-01T00:00:00Z")
    result = json.loads(out)
    assert truncated
    assert result == {
        "_warnings": ["timestamp_clamped", "metadata_truncated"],
        "_original_timestamp": "2099-01-01T00:00:00Z",
        "_original_size": len(_compact(meta).encode()),
    }


def test_clamp_warning_pushing_metadata_over_the_limit_truncates_it():
    meta = {"a": "x" * 2000, "b": "y" * 2060}
    assert len(_compact(meta).encode()) <= 4096
    out, truncated = warn_metadata(_compact(meta), "2099-01-01T00:00:00Z")
    assert truncated and len(out.encode()) <= 4096
    assert list(json.loads(out))[:1] == ["a"]
