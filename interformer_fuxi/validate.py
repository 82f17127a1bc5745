"""Check BARS-style CSVs before the (long) CSV -> H5 build.

One pass over each data file, in chunks of lines, with vectorised pandas string ops:

- the header: with ``csv_header`` in the dataset config it must equal that list, in order;
  otherwise it must hold every configured column (derived ``copy_from(x)`` columns need ``x``);
- the number of fields on every line;
- labels are 0 or 1; ``dtype: int`` columns hold integers; ``type: numeric`` columns parse
  as numbers (empty only with ``fill_na``);
- sequences use their ``splitter`` (no other common separator, no empty element); rows
  longer than ``max_len`` are counted and reported as truncation, not as errors;
- optionally the file's md5 against a ``md5: {file name: checksum}`` mapping (BARS's
  published checksums are in the BARS dataset sections of config/dataset_config.yaml);
- a ``pretrained_emb`` H5 holds ``key`` and a 2-D ``value`` of the configured width.

``bad_rows: fail`` (default) stops with one line naming the file, the count per kind and the
first bad rows with their line numbers (the header is line 1). ``bad_rows: skip`` writes the
good lines to a cleaned copy in the build's temporary folder, builds from it and logs how
many were dropped; the original files are never modified.
"""
import csv
import hashlib
import io
import logging
import os
import time
from collections import Counter

import numpy as np
import pandas as pd
from tqdm import tqdm

from .columns import copy_source, feature_columns, label_columns, required_columns
from .errors import UserError

BAD_ROW_MODES = ("fail", "skip")
MAX_EXAMPLES = 5
CHUNK_BYTES = 64 << 20
# Separators that betray a history joined with the wrong character (tokens are ids).
SEPARATORS = ("^", "|", ";", ",", " ", "\t")


def _split_header(line, sep):
    return next(csv.reader([line], delimiter=sep)) if '"' in line else line.split(sep)


class ColumnCheck:
    """What to check in one CSV column (a configured column, or the source of a derived one)."""

    def __init__(self, name, kind, col):
        self.name, self.kind, self.col = name, kind, col

    def bad(self, values):
        """``(mask of bad rows, message per bad row)`` for a Series of raw strings."""
        if self.kind == "label":
            num = pd.to_numeric(values, errors="coerce")
            mask = ~num.isin([0, 1])
            return mask, "label " + _quote(values[mask]) + f" of {self.name} is not 0 or 1"
        if self.kind == "int":
            mask = ~values.str.fullmatch(r"\s*-?\d+\s*")
            return mask, f"{self.name} = " + _quote(values[mask]) + " is not an integer"
        if self.kind == "numeric":
            empty = values.str.strip() == ""
            num = pd.to_numeric(values.where(~empty, "0"), errors="coerce")
            # NaN and inf parse as numbers, and would poison the normaliser and the loss
            mask = ~np.isfinite(num.astype(float)) | (empty if self.col.get("fill_na") is None else False)
            msg = values[mask].map(lambda v: f"{self.name} is empty (set fill_na to allow it)"
                                   if not v.strip() else f"{self.name} = {v[:30]!r} is not a finite number")
            return mask, msg
        if self.kind == "sequence":
            splitter = self.col.get("splitter") or "^"
            # one C-speed scan of the whole chunk; rows are located only if something is wrong
            text = "\n" + "\n".join(values.tolist()) + "\n"
            suspects = [s for s in SEPARATORS if s != splitter and s in text]
            empty_item = any(p in text for p in (splitter * 2, "\n" + splitter, splitter + "\n"))
            if not suspects and not empty_item:
                return pd.Series(False, index=values.index), ""
            mask = values.map(lambda v: _has_foreign(v, splitter) or (
                v != "" and (splitter * 2 in v or v.startswith(splitter) or v.endswith(splitter))))
            msg = values[mask].map(lambda v: f"{self.name} = {v[:40]!r} is not joined by {splitter!r}"
                                   if _has_foreign(v, splitter)
                                   else f"{self.name} = {v[:40]!r} has an empty element")
            return mask, msg
        return pd.Series(False, index=values.index), ""

    def lengths(self, values):
        splitter = self.col.get("splitter") or "^"
        return values.map(lambda v: v.count(splitter) + 1 if v else 0)


def _has_foreign(value, splitter):
    return any(s in value for s in SEPARATORS if s != splitter)


def _quote(values):
    return values.map(lambda v: repr(v[:30]))


def column_checks(params):
    """The checks for the columns FuxiCTR reads, keyed by CSV column name."""
    checks = {}
    for col in label_columns(params):
        checks[col["name"]] = ColumnCheck(col["name"], "label", col)
    for col in feature_columns(params):
        if not col.get("active", True):
            continue
        source = copy_source(col)
        name = source or col["name"]
        if col.get("type") == "sequence":
            kind = "sequence"
        elif col.get("type") == "numeric":
            kind = "numeric"
        elif str(col.get("dtype")) in ("int", "<class 'int'>"):
            kind = "int"
        else:
            kind = "str"
        if name not in checks or checks[name].kind == "str":
            checks[name] = ColumnCheck(name, kind, col)
    return checks


def check_header(path, header, params):
    expected = params.get("csv_header")
    if expected:
        if header != list(expected):
            for i, (want, got) in enumerate(zip(list(expected) + [None] * len(header),
                                                header + [None] * len(expected))):
                if want != got:
                    raise UserError(f"{path}: header column {i + 1} is {got!r}, expected {want!r} "
                                    f"(csv_header of {params['dataset_id']}: {','.join(expected)}; "
                                    f"found: {','.join(header)})")
    duplicated = [c for c, n in Counter(header).items() if n > 1]
    if duplicated:
        raise UserError(f"{path}: column {duplicated[0]!r} appears twice in the header")
    missing = [c for c in required_columns(params) if c not in header]
    if missing:
        raise UserError(f"{path}: column {missing[0]!r} configured in {params['dataset_id']} "
                        f"is missing (header: {','.join(header)})")


class FileReport:
    """What one pass over a CSV found."""

    def __init__(self, path):
        self.path, self.rows, self.bad = path, 0, Counter()
        self.examples, self.truncated, self.cleaned = [], {}, None

    @property
    def num_bad(self):
        return sum(self.bad.values())

    def summary(self):
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(self.bad.items()))
        first = "; ".join(f"line {line}: {msg}" for line, msg in self.examples)
        return f"{self.num_bad} bad row(s) of {self.rows} ({kinds}); first: {first}"


def validate_file(path, params, checks, mode="fail", cleaned_path=None):
    """Check one CSV; in ``skip`` mode write its good lines to ``cleaned_path``."""
    sep = params.get("sep", ",")
    report = FileReport(path)
    started = time.time()
    with open(path, encoding="utf-8", newline="") as f:
        try:
            header_line = f.readline().rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        header = _split_header(header_line, sep)
        check_header(path, header, params)
        index = {name: header.index(name) for name in checks}
        out = open(cleaned_path, "w", encoding="utf-8", newline="") if mode == "skip" else None
        if out:
            out.write(header_line + "\n")
        first_line = 2
        bar = tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, disable=None,
                   desc=f"validate {os.path.basename(path)}", leave=False)
        try:
            while True:
                try:
                    chunk = f.readlines(CHUNK_BYTES)
                except UnicodeDecodeError as exc:
                    raise UserError(f"{path}: not UTF-8 text after line {first_line - 1} "
                                    f"({exc.reason})") from None
                if not chunk:
                    break
                bar.update(sum(len(l) for l in chunk))
                lines = pd.Series(chunk, dtype=object).str.rstrip("\r\n")
                lines.index = range(first_line, first_line + len(lines))
                good = _check_chunk(lines, sep, len(header), index, checks, report)
                if out:
                    out.write("\n".join(lines[good]) + ("\n" if good.any() else ""))
                report.rows += len(lines)
                first_line += len(lines)
        finally:
            bar.close()
            if out:
                out.close()
    if report.rows == 0:
        raise UserError(f"{path}: has a header but no data rows")
    if report.num_bad and mode == "fail":
        raise UserError(f"{path}: {report.summary()}; fix the file or set `bad_rows: skip` in "
                        f"dataset_config {params['dataset_id']} to drop such rows")
    report.cleaned = cleaned_path if report.num_bad else None
    _log_report(report, time.time() - started)
    return report


def _check_chunk(lines, sep, num_fields, index, checks, report):
    """Mark the bad lines of one chunk (index = line numbers); return the mask of good ones."""
    counts = lines.map(lambda l: l.count(sep) + 1)
    unclosed = pd.Series(False, index=lines.index)
    if '"' in "".join(lines.tolist()):  # rare: quoted fields may hold the separator
        quoted = lines.str.contains('"', regex=False)
        counts[quoted] = lines[quoted].map(lambda l: len(_split_header(l, sep)))
        # a quote left open runs into the next line: a field spanning lines is never an id or a number
        unclosed = lines.str.count('"') % 2 == 1
        _record(report, "unclosed quote", lines.index[unclosed],
                pd.Series("a quoted field is not closed on its line", index=lines.index[unclosed]))
    bad = (counts != num_fields) & ~unclosed
    _record(report, "field count", lines.index[bad],
            counts[bad].map(lambda n: f"expected {num_fields} fields, saw {n}"))
    bad |= unclosed
    ok = lines[~bad]
    if ok.empty:
        return ~bad
    fields = _parse(ok, sep, num_fields)
    if fields is None:  # quoting the checks above let through: drop the lines the parser rejects
        broken = ok.map(lambda line: _parse(pd.Series([line]), sep, num_fields) is None)
        _record(report, "quoting", ok.index[broken],
                pd.Series("the quotes of this line do not parse", index=ok.index[broken]))
        bad[ok.index[broken]] = True
        ok = ok[~broken]
        fields = _parse(ok, sep, num_fields) if not ok.empty else None
        if fields is None:  # never accept lines unchecked
            _record(report, "quoting", ok.index, pd.Series("the quotes of this line do not parse", index=ok.index))
            bad[ok.index] = True
            return ~bad
    fields.index = ok.index
    for name, check in checks.items():
        values = fields[index[name]]
        mask, messages = check.bad(values)
        if mask.any():
            _record(report, check.kind if check.kind != "int" else "integer", values.index[mask],
                    messages if isinstance(messages, pd.Series) else pd.Series(messages, index=values.index[mask]))
            bad[values.index[mask]] = True
        if check.kind == "sequence" and check.col.get("max_len"):
            lengths = check.lengths(values[~mask])
            over = lengths > check.col["max_len"]
            if over.any():
                count, longest = report.truncated.get(name, (0, 0))
                report.truncated[name] = (count + int(over.sum()), max(longest, int(lengths.max())))
    return ~bad


def _parse(lines, sep, num_fields):
    """The lines split into ``num_fields`` string columns by pandas' C parser (the fastest), or
    None where it rejects them or splits them otherwise."""
    try:
        fields = pd.read_csv(io.StringIO("\n".join(lines.tolist())), sep=sep, header=None, dtype=str,
                             na_filter=False, engine="c")
    except (pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    return fields if fields.shape == (len(lines), num_fields) else None


def _record(report, kind, line_numbers, messages):
    if len(line_numbers) == 0:
        return
    report.bad[kind] += len(line_numbers)
    for line, msg in zip(line_numbers, messages):
        if len(report.examples) >= MAX_EXAMPLES:
            break
        report.examples.append((int(line), msg))
    report.examples.sort()
    del report.examples[MAX_EXAMPLES:]


def _log_report(report, seconds):
    logging.info("Validated %s: %d rows in %.1fs", report.path, report.rows, seconds)
    if report.num_bad:
        logging.warning("%s: skipping %s", report.path, report.summary())
    for name, (count, longest) in report.truncated.items():
        logging.info("%s: %d rows have %s longer than max_len (longest %d): FuxiCTR truncates them",
                     report.path, count, name, longest)


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True,
                                     disable=None, desc=f"md5 {os.path.basename(path)}", leave=False) as bar:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def check_md5(params):
    expected = params.get("md5") or {}
    if not isinstance(expected, dict):
        raise UserError(f"{params['dataset_id']}: md5 must map file names to checksums, "
                        f"e.g. {{train.csv: e9bf80b92985e463db18fdc753d347b5}}")
    done = set()
    for key in ("train_data", "valid_data", "test_data"):
        path = params.get(key)
        name = os.path.basename(path) if path else None
        if not name or name not in expected or path in done:
            continue
        done.add(path)
        actual = file_md5(path)
        if actual != str(expected[name]).lower():
            raise UserError(f"{path}: md5 {actual} differs from {expected[name]} (md5 of "
                            f"{params['dataset_id']} in dataset_config): not the published file; "
                            "download it again, or remove its md5 entry to use it as it is")
        logging.info("%s: md5 %s as published", path, actual)


def check_pretrained(params):
    import h5py

    for col in feature_columns(params):
        path = col.get("pretrained_emb")
        if not path or col.get("share_embedding"):
            continue
        try:
            with h5py.File(path, "r") as hf:
                if "key" not in hf or "value" not in hf:
                    raise UserError(f"{path}: pretrained_emb of {col['name']} needs datasets 'key' "
                                    f"and 'value', found {sorted(hf.keys())}")
                shape, keys = hf["value"].shape, hf["key"].shape
        except OSError as exc:
            raise UserError(f"{path}: pretrained_emb of {col['name']} is not an H5 file ({exc})") from None
        if len(shape) != 2 or keys[0] != shape[0]:
            raise UserError(f"{path}: pretrained_emb of {col['name']}: 'value' must be [num_keys, dim] "
                            f"with one row per key, got value {shape} and key {keys}")
        if col.get("embedding_dim") and int(col["embedding_dim"]) != shape[1]:
            raise UserError(f"{params['dataset_id']}: {col['name']} has embedding_dim "
                            f"{col['embedding_dim']} but its pretrained_emb is {shape[1]}-dimensional")


def validate_dataset(params, work_dir):
    """Validate every data file of ``params``; return ``{split key: path to build from}``.

    In ``skip`` mode a file with bad rows is replaced by its cleaned copy in ``work_dir``.
    """
    mode = params.get("bad_rows", "fail")
    if mode not in BAD_ROW_MODES:
        raise UserError(f"{params['dataset_id']}: bad_rows must be one of {', '.join(BAD_ROW_MODES)}, "
                        f"got {mode!r}")
    group = params.get("group_id")
    if group and group not in [c["name"] for c in feature_columns(params)]:
        raise UserError(f"{params['dataset_id']}: group_id {group!r} is not a configured feature column")
    check_md5(params)
    check_pretrained(params)
    checks = column_checks(params)
    paths, done = {}, {}
    for key in ("train_data", "valid_data", "test_data"):
        path = params.get(key)
        if not path:
            continue
        if path not in done:
            cleaned = os.path.join(work_dir, f"validated-{key.split('_')[0]}.csv")
            done[path] = validate_file(path, params, checks, mode, cleaned).cleaned or path
        paths[key] = done[path]
    return paths
