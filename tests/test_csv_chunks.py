"""Reading a CSV as tokenized chunks: worker processes give the single-process build, in file
order; files that cannot be cut at line ends are read by one process; the chunks in flight
are bounded; a bad chunk names its file."""
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from interformer_fuxi.csv_chunks import ChunkReader, Layout, OrderedResults
from interformer_fuxi.data import build_h5
from interformer_fuxi.errors import UserError
from test_stream_build import assert_same_build, one_pass, options_params


def reader_of(params, chunk_rows, workers):
    from interformer_fuxi.stream_build import StreamingBuilder

    return StreamingBuilder(params, chunk_rows, workers).reader


def build(params, root, **keys):
    p = dict(params, data_root=str(root), build="streaming", **keys)
    build_h5(p)
    return os.path.join(p["data_root"], p["dataset_id"])


def test_worker_processes_build_what_one_process_builds(tmp_path):
    """Two workers on chunks of about 7 rows: the same feature map, vocabularies, processor
    and arrays as one process (so, by test_stream_build, as FuxiCTR's builder)."""
    params = one_pass(options_params(tmp_path / "csv"))
    reader = reader_of(params, 7, 2)
    header, spans = reader._ranges(params["train_data"])
    assert header.startswith(b"label,") and len(spans) > 10
    assert spans[0][0] == len(header) and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert spans[-1][1] == os.path.getsize(params["train_data"])
    one = build(params, tmp_path / "one", chunk_rows=7, build_workers=1)
    two = build(params, tmp_path / "two", chunk_rows=7, build_workers=2)
    assert_same_build(one, two)


def test_a_file_with_quotes_is_read_by_one_process(tmp_path):
    """A quoted field may hold a line end, so a quoted file is not cut into byte ranges; it
    still builds as with one process."""
    params = one_pass(options_params(tmp_path / "csv"))
    path = params["valid_data"]
    lines = open(path).read().splitlines()
    fields = lines[3].split(",")
    fields[2] = '"' + fields[2] + '"'  # the item column, quoted: the same value to the parser
    lines[3] = ",".join(fields)
    open(path, "w").write("\n".join(lines) + "\n")
    assert reader_of(params, 7, 2)._ranges(path) is None
    assert reader_of(params, 7, 2)._ranges(params["train_data"]) is not None
    assert_same_build(build(params, tmp_path / "one", chunk_rows=7, build_workers=1),
                      build(params, tmp_path / "two", chunk_rows=7, build_workers=2))


def test_chunks_come_in_order_with_a_bounded_number_in_flight():
    drawn = []

    def tasks():
        for k in range(20):
            drawn.append(k)
            yield k

    with ThreadPoolExecutor(3) as pool:
        results = []
        ordered = OrderedResults(pool, lambda k: k * k, tasks(), ahead=4)
        assert len(drawn) == 4  # reading starts when the iterator is made
        for value in ordered:
            assert len(drawn) - len(results) <= 5  # submitted, not yet consumed (this one included)
            results.append(value)
    assert results == [k * k for k in range(20)]


def test_an_undecodable_chunk_names_the_file_and_where(tmp_path):
    path = tmp_path / "bad.csv"
    rows = [b"a,b"] + [b"%d,x%d" % (k, k) for k in range(40)]
    rows[30] = b"30,\xff\xfe"
    path.write_bytes(b"\n".join(rows) + b"\n")
    cols = [{"name": "a", "type": "categorical"}, {"name": "b", "type": "categorical"}]
    for workers in (1, 2):
        reader = ChunkReader("bad", [], cols, {"a": str, "b": str}, chunk_rows=5, workers=workers)
        try:
            with pytest.raises(UserError) as err:
                for _ in reader.chunks(str(path), [Layout("a", "categorical"), Layout("b", "categorical")]):
                    pass
        finally:
            reader.close()
        assert str(path) in str(err.value) and "cannot parse the CSV" in str(err.value)
        assert "\n" not in str(err.value)


def test_build_workers_must_be_a_positive_integer(tmp_path):
    params = options_params(tmp_path / "csv", data_root=str(tmp_path / "out"), build="streaming",
                            build_workers=0)
    with pytest.raises(UserError, match="build_workers must be a positive integer"):
        build_h5(params)


def test_where_workers_cannot_start_one_process_reads(tmp_path):
    """A script read from stdin cannot be imported by the worker processes: the build warns
    and reads the file itself, with the same result."""
    import subprocess
    import sys

    from conftest import REPO

    path = tmp_path / "good.csv"
    path.write_text("a,b\n" + "".join(f"{k},x{k}\n" for k in range(60)))
    script = (
        "from interformer_fuxi.csv_chunks import ChunkReader, Layout\n"
        "cols = [{'name': 'a', 'type': 'categorical'}, {'name': 'b', 'type': 'categorical'}]\n"
        "r = ChunkReader('x', [], cols, {'a': str, 'b': str}, chunk_rows=7, workers=2)\n"
        f"chunks = list(r.chunks({str(path)!r}, [Layout('b', 'categorical')]))\n"
        "r.close()\n"
        "print('rows', sum(len(c['b'].codes) for c in chunks))\n")
    proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rows 60" in proc.stdout
    assert "worker processes could not start" in proc.stderr
