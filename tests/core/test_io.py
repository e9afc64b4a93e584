"""Atomic writes: a failing block never leaves a half-written file or folder behind."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from pneumo.core.io import (
    atomic_dir,
    atomic_path,
    read_json,
    sha256_file,
    sha256_json,
    write_json,
    write_text,
)


class Boom(RuntimeError):
    pass


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    """Atomic writes must give the modes an ordinary write would (mkstemp alone gives 0600)."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_write_json_round_trip(tmp_path):
    target = tmp_path / "sub" / "m.json"
    obj = {"a": 1, "b": [1.5, None], "c": {"d": "e"}}
    assert write_json(target, obj) == target
    assert json.loads(target.read_text()) == obj
    assert read_json(target) == obj
    assert target.read_text().endswith("\n")


def test_write_json_keeps_old_file_when_serialising_fails(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"old": True})

    class Unencodable:
        def __str__(self):
            raise Boom("cannot serialise")

    with pytest.raises(Boom):
        write_json(target, {"new": Unencodable()})
    assert read_json(target) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_atomic_path_keeps_old_file_when_block_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            assert tmp != target and tmp.parent == target.parent
            tmp.write_text("half-writ")
            raise Boom()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible until the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_without_old_file_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "deep" / "out.txt"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            raise Boom()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_written_files_follow_the_umask(tmp_path, umask):
    (tmp_path / "plain.txt").write_text("reference")
    expected = _mode(tmp_path / "plain.txt")
    assert expected == 0o666 & ~umask
    assert _mode(write_json(tmp_path / "a.json", {"x": 1})) == expected
    assert _mode(write_text(tmp_path / "b.txt", "hi")) == expected
    with atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"\x00\x01")
    assert _mode(tmp_path / "c.bin") == expected


def test_atomic_dir_replaces_folder_on_success(tmp_path, umask):
    target = tmp_path / "stage"
    target.mkdir()
    (target / "stale.txt").write_text("stale")
    with atomic_dir(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        (tmp / "fresh.txt").write_text("fresh")
        assert (target / "stale.txt").exists()  # old outputs stay until success
    assert sorted(p.name for p in target.iterdir()) == ["fresh.txt"]
    assert _mode(target) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]  # no .tmp/.old left


def test_atomic_dir_keeps_old_folder_and_cleans_temp_on_failure(tmp_path):
    target = tmp_path / "stage"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    seen = {}
    with pytest.raises(Boom):
        with atomic_dir(target) as tmp:
            seen["tmp"] = tmp
            (tmp / "partial.txt").write_text("partial")
            raise Boom()
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "keep"
    assert not seen["tmp"].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_atomic_dir_creates_new_folder(tmp_path):
    target = tmp_path / "a" / "b"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"


def test_atomic_dir_failure_without_old_folder_leaves_nothing(tmp_path):
    target = tmp_path / "stage"
    with pytest.raises(Boom):
        with atomic_dir(target) as tmp:
            (tmp / "x").write_text("1")
            raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_read_json_errors_name_the_file(tmp_path):
    missing = tmp_path / "none.json"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        read_json(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=str(bad)):
        read_json(bad)


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=7) == expected  # chunking does not change the digest


def test_sha256_json_ignores_key_order():
    assert sha256_json({"a": 1, "b": [2, 3]}) == sha256_json({"b": [2, 3], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 2})


def test_swap_moves_the_old_folder_aside_and_puts_it_back_when_the_move_fails(tmp_path):
    from pneumo.core.io import swap

    target, new, keep = tmp_path / "out", tmp_path / "new", tmp_path / "keep"
    target.mkdir()
    (target / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    assert swap(new, target, keep) == keep
    assert (target / "a").read_text() == "new" and (keep / "a").read_text() == "old" and not new.exists()
    # The new folder is gone, so the second move fails: the previous folder comes back.
    with pytest.raises(FileNotFoundError):
        swap(tmp_path / "missing", target, tmp_path / "keep2")
    assert (target / "a").read_text() == "new" and not (tmp_path / "keep2").exists()
    assert swap(keep, tmp_path / "fresh", tmp_path / "unused") is None  # nothing to move aside
    assert (tmp_path / "fresh" / "a").read_text() == "old"


def test_restorable_puts_files_back_without_writing_on_a_full_disk(tmp_path, monkeypatch):
    """The rollback renames its copies back: it works even when every write now fails."""
    import errno
    import shutil

    from pneumo.core.io import restorable

    kept, created = tmp_path / "data.dvc", tmp_path / "new.txt"
    kept.write_bytes(b"outs:\n- md5: old\n")
    with pytest.raises(Boom):
        with restorable([kept, created]):
            kept.write_bytes(b"half")
            created.write_bytes(b"made in the block")

            def full(*args, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(shutil, "copyfile", full)
            monkeypatch.setattr(shutil, "copy2", full)
            raise Boom()
    assert kept.read_bytes() == b"outs:\n- md5: old\n" and not created.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.dvc"]  # no backup copies left


def test_restorable_keeps_the_block_changes_on_success(tmp_path):
    from pneumo.core.io import restorable

    path = tmp_path / "a.txt"
    path.write_text("old")
    with restorable([path]):
        path.write_text("new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_restorable_changes_nothing_when_a_backup_cannot_be_made(tmp_path, monkeypatch):
    import errno
    import shutil

    from pneumo.core.io import restorable

    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("a")
    second.write_text("b")
    real = shutil.copy2

    def copy2(src, dst, *a, **k):
        if str(src) == str(second):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copy2", copy2)
    ran = []
    with pytest.raises(OSError, match="No space left"):
        with restorable([first, second]):
            ran.append(True)
    assert ran == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
