"""CSV -> H5 at TaobaoAd_x1 scale: FuxiCTR 2.0.4's builder against the streaming one.

    python benchmarks/build_scale.py --quick                    # 20k rows, both builders, outputs compared
    python benchmarks/build_scale.py --rows 1000000 5000000 21929911 [--scratch /tmp/build_scale]
    python benchmarks/build_scale.py --table                    # the table of the saved results

For each size it writes (once, chunked, seeded) ``train.csv`` of that many rows and
``test.csv`` of 14% as many (TaobaoAd_x1: 21,929,911 and 3,099,515 rows) in the exact
TaobaoAd_x1 schema, then builds the ``taobaoad_x1`` dataset config (valid = test, as BARS)
with each builder in its own process:

- ``fuxictr``: FuxiCTR 2.0.4's ``FeatureProcessor`` + ``build_dataset`` (no project code);
- ``streaming``: ``interformer_fuxi.stream_build.build_streaming`` (``--chunk_rows``,
  ``--workers`` tokenizing processes: by default the build's own, up to 4 of the CPUs);
- ``streaming+validate`` (``--validate``): the project's ``build_h5``, row validation included.

Measured: wall time and peak memory of the process tree (FuxiCTR's token counting runs in 8
forked worker processes): ``/proc/<pid>/smaps_rollup`` polled every 0.2 s, the peak of the
PSS sum over the tree (shared pages divided among their sharers: what the tree holds) and of
the RSS sum (which counts the pages forked workers share once per worker). A run stops at
``--timeout_min`` or ``--mem_cap_gb`` (or 85% of the memory available at the start). A size
is not run for a builder whose smaller size extrapolates (linearly in rows) beyond the caps:
the table says ``not run: would need ~X GB`` / ``~Y min``. Where both builders ran, their
feature maps, vocabularies and every H5 array are compared. Each run's result goes to
``benchmarks/results/build_scale/<rows>_<builder>.json`` as soon as it ends; a Markdown table
is printed at the end. The CSVs stay in the scratch folder (``--keep`` keeps the H5 output).

The generated data (seeded; ``--seed``): ids of the real cardinalities (1,141,729 users,
846,811 ads with their category, campaign, customer, brand and price; 12,978 categories and
461,497 brands in the histories), drawn with a heavy head (``ceil(N * u**2.5)``); 5% of
``pvalue_level`` and ``new_user_class_level`` empty, as in the release; behaviour histories
of up to 50 events (60% full, the rest uniform in 0..49), aligned over ``cate_his``,
``brand_his`` and ``btag_his``; 100,000 distinct histories, one per user (``user % 100000``).
"""
import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "data"))

RESULTS = os.path.join(REPO, "benchmarks", "results", "build_scale")
TAOBAO_TRAIN_ROWS, TAOBAO_TEST_ROWS = 21_929_911, 3_099_515
TEST_FRACTION = TAOBAO_TEST_ROWS / TAOBAO_TRAIN_ROWS
USERS, ADS, CATES, CAMPAIGNS, CUSTOMERS, BRANDS = 1_141_729, 846_811, 12_978, 423_436, 255_875, 461_497
AD_CATES, AD_BRANDS = 6_769, 99_815
MAX_HISTORY, HISTORY_POOL = 50, 100_000
GEN_CHUNK = 250_000
BUILDERS = ("fuxictr", "streaming", "streaming+validate")


# ---- data -------------------------------------------------------------------------------

def heavy(rng, n, card):
    """``n`` ids in ``1..card`` with a heavy head (``ceil(card * u**2.5)``)."""
    return np.maximum(1, np.ceil(card * rng.random(n) ** 2.5)).astype(np.int64)


def join_rows(ids, lengths):
    """``^``-join the first ``lengths[r]`` ids of each row of ``ids`` [n, L]: the rows of one
    length at a time (a loop over the 51 lengths; ``str.join`` does the rows)."""
    names = np.arange(ids.max(initial=0) + 1).astype(str).astype(object)[ids]
    out = np.empty(len(ids), dtype=object)
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        out[rows] = list(map("^".join, names[rows, :length].tolist()))
    return out


def history_pool(rng, size):
    """``size`` aligned (cate_his, brand_his, btag_his) strings, up to 50 events each."""
    lengths = np.where(rng.random(size) < 0.6, MAX_HISTORY, rng.integers(0, MAX_HISTORY, size))
    shape = (size, MAX_HISTORY)
    cate = heavy(rng, size * MAX_HISTORY, CATES).reshape(shape)
    brand = heavy(rng, size * MAX_HISTORY, BRANDS).reshape(shape)
    btag = rng.choice(4, size=shape, p=[0.85, 0.05, 0.05, 0.05]) + 1
    return join_rows(cate, lengths), join_rows(brand, lengths), join_rows(btag, lengths)


def generate(folder, rows, seed=2024):
    """Write ``train.csv`` (``rows``) and ``test.csv`` (14% of ``rows``) in TaobaoAd_x1's schema;
    returns the seconds taken (0 if they exist from an earlier run with the same arguments)."""
    from make_tiny_bars import TAOBAO_COLUMNS

    marker = os.path.join(folder, "done.json")
    spec = {"rows": rows, "seed": seed, "test_rows": int(round(rows * TEST_FRACTION))}
    if os.path.isfile(marker) and {k: json.load(open(marker)).get(k) for k in ("rows", "seed")} == \
            {k: spec[k] for k in ("rows", "seed")}:
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    started = time.time()
    rng = np.random.default_rng(seed)
    profile = {"cms_segid": rng.integers(0, 97, USERS), "cms_group_id": rng.integers(0, 13, USERS),
               "final_gender_code": rng.integers(1, 3, USERS), "age_level": rng.integers(0, 7, USERS),
               "pvalue_level": rng.integers(1, 4, USERS), "shopping_level": rng.integers(1, 4, USERS),
               "occupation": rng.integers(0, 2, USERS), "new_user_class_level": rng.integers(1, 5, USERS)}
    ad_cate, ad_brand = heavy(rng, ADS, AD_CATES), heavy(rng, ADS, AD_BRANDS)
    ad_campaign, ad_customer = heavy(rng, ADS, CAMPAIGNS), heavy(rng, ADS, CUSTOMERS)
    ad_price = np.round(np.exp(rng.normal(4.0, 1.2, ADS)), 2)
    pool = history_pool(rng, min(HISTORY_POOL, max(rows, 1)))
    for name, n in (("train", rows), ("test", spec["test_rows"])):
        path = os.path.join(folder, name + ".csv")
        with open(path, "w", newline="") as f:
            for start in range(0, n, GEN_CHUNK):
                m = min(GEN_CHUNK, n - start)
                user = heavy(rng, m, USERS) - 1
                ad = heavy(rng, m, ADS) - 1
                hist = user % len(pool[0])
                cols = {"clk": (rng.random(m) < 0.05).astype(np.int64),
                        "btag_his": pool[2][hist], "cate_his": pool[0][hist], "brand_his": pool[1][hist],
                        "userid": user + 1}
                for key, values in profile.items():
                    cols[key] = values[user].astype(object)
                    if key in ("pvalue_level", "new_user_class_level"):
                        cols[key][rng.random(m) < 0.05] = ""
                cols.update({"adgroup_id": ad + 1, "cate_id": ad_cate[ad], "campaign_id": ad_campaign[ad],
                             "customer": ad_customer[ad], "brand": ad_brand[ad], "price": ad_price[ad],
                             "pid": np.where(rng.random(m) < 0.7, "430548_1007", "430539_1007"),
                             "btag": rng.choice(4, size=m, p=[0.85, 0.05, 0.05, 0.05]) + 1})
                pd.DataFrame(cols)[TAOBAO_COLUMNS].to_csv(f, header=start == 0, index=False)
    json.dump(spec, open(marker, "w"))
    return time.time() - started


def dataset_params(folder, out_root, dataset_id="taobaoad_x1"):
    """The ``taobaoad_x1`` section of config/dataset_config.yaml on the generated CSVs."""
    from interformer_fuxi.config import load_yaml

    params = dict(load_yaml(open(os.path.join(REPO, "config", "dataset_config.yaml")))["taobaoad_x1"])
    params.pop("md5", None)
    test = os.path.join(folder, "test.csv")
    params.update(dataset_id=dataset_id, data_root=out_root, train_data=os.path.join(folder, "train.csv"),
                  valid_data=test, test_data=test)
    return params


# ---- one build (child process) ------------------------------------------------------------

def run_one(builder, folder, out_root, chunk_rows, workers):
    """Build in this process; print one JSON line of phase times."""
    params = dataset_params(folder, out_root)
    started = time.time()
    if builder == "fuxictr":
        from fuxictr.preprocess import FeatureProcessor, build_dataset

        params = {k: v for k, v in params.items() if k != "csv_header"}
        build_dataset(FeatureProcessor(**params), **params)
    elif builder == "streaming":
        from interformer_fuxi.columns import feature_columns
        from interformer_fuxi.stream_build import build_streaming

        build_streaming(dict(params, feature_cols=feature_columns(params)), params, chunk_rows, workers)
    else:
        from interformer_fuxi.data import build_h5

        build_h5(dict(params, build="streaming", chunk_rows=chunk_rows, build_workers=workers))
    print(json.dumps({"build_s": time.time() - started}))


# ---- measuring (parent) -------------------------------------------------------------------

def _children():
    """``{pid: [child pids]}`` from ``/proc``."""
    tree = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    return tree


def tree_memory(pid):
    """``(rss, pss)`` bytes of ``pid`` and its descendants. The RSS sum counts pages that
    forked workers share with their parent once per process; the PSS sum (each shared page
    divided among its sharers) is the memory the tree really holds."""
    tree, todo, rss, pss = _children(), [pid], 0, 0
    while todo:
        p = todo.pop()
        todo.extend(tree.get(p, []))
        try:
            for line in open(f"/proc/{p}/smaps_rollup"):
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def mem_available():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(builder, folder, out_root, chunk_rows, workers, timeout_s, mem_cap):
    """Run one build in a child process; returns the result record."""
    shutil.rmtree(out_root, ignore_errors=True)
    os.makedirs(out_root)
    cmd = [sys.executable, os.path.abspath(__file__), "--run-one", builder, folder, out_root, str(chunk_rows),
           str(workers)]
    started, peak, peak_rss, status = time.time(), 0, 0, "ok"
    log_path = out_root + ".log"  # a file, not a pipe: progress bars must never block the child
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    while proc.poll() is None:
        rss, pss = tree_memory(proc.pid)
        peak, peak_rss = max(peak, pss), max(peak_rss, rss)
        if peak > mem_cap or time.time() - started > timeout_s:
            status = (f"stopped at {mem_cap / 2**30:.1f} GB" if peak > mem_cap
                      else f"stopped after {timeout_s / 60:.0f} min")
            os.killpg(proc.pid, 9)  # the child's own session: it and its workers
            break
        time.sleep(0.2)
    proc.wait()
    log.close()
    wall = time.time() - started
    if status == "ok" and proc.returncode != 0:
        status = "failed: " + (open(log_path).read().strip().splitlines() or ["?"])[-1][:200]
    return {"builder": builder, "status": status, "wall_s": round(wall, 1), "peak_pss_gb": round(peak / 2**30, 2),
            "peak_rss_sum_gb": round(peak_rss / 2**30, 2), "chunk_rows": chunk_rows if builder != "fuxictr" else None,
            "workers": workers if builder != "fuxictr" else None,
            "load_avg_at_start": open("/proc/loadavg").read().split()[:3]}


def compare(dir_a, dir_b, slice_rows=500_000):
    """Whether two build folders hold the same feature map, vocabularies and arrays (read in
    slices); returns ``(equal, first difference or "")``."""
    import h5py

    for name in ("feature_map.json", "feature_vocab.json"):  # byte for byte
        if open(os.path.join(dir_a, name), "rb").read() != open(os.path.join(dir_b, name), "rb").read():
            return False, name
    for split in ("train", "valid", "test"):
        with h5py.File(os.path.join(dir_a, split + ".h5"), "r") as a, h5py.File(os.path.join(dir_b, split + ".h5"), "r") as b:
            if sorted(a) != sorted(b):
                return False, f"{split}.h5 keys"
            for key in a:
                if a[key].shape != b[key].shape or a[key].dtype != b[key].dtype:
                    return False, f"{split}.h5:{key} shape/dtype"
                for s in range(0, a[key].shape[0], slice_rows):
                    if not np.array_equal(a[key][s:s + slice_rows], b[key][s:s + slice_rows]):
                        return False, f"{split}.h5:{key} rows {s}.."
    return True, ""


def extrapolate(smaller, rows):
    """Linear-in-rows (time, memory) estimate for ``rows`` from a smaller size's record."""
    ratio = rows / smaller["rows"]
    base = 0.3  # GB: the interpreter and libraries
    return smaller["wall_s"] * ratio, base + max(0.0, smaller["peak_pss_gb"] - base) * ratio


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{os.cpu_count()} CPU cores ({cpu}), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, {platform.python_version()}"


def table(records):
    lines = ["| train rows | CSV GB | builder | wall | peak PSS (RSS sum) | vs FuxiCTR | output |",
             "|---:|---:|---|---:|---:|---:|---|"]
    by_rows = {}
    for r in records:
        by_rows.setdefault(r["rows"], {})[r["builder"]] = r
    for rows in sorted(by_rows):
        ref = by_rows[rows].get("fuxictr")
        for builder in BUILDERS:
            r = by_rows[rows].get(builder)
            if r is None:
                continue
            if r["status"] == "ok":
                wall = f"{r['wall_s'] / 60:.1f} min" if r["wall_s"] >= 600 else f"{r['wall_s']:.0f} s"
                mem = f"{r['peak_pss_gb']:.2f} GB ({r['peak_rss_sum_gb']:.2f} GB)"
                speed = (f"{ref['wall_s'] / r['wall_s']:.1f}x faster, {ref['peak_pss_gb'] / r['peak_pss_gb']:.1f}x less memory"
                         if builder != "fuxictr" and ref and ref["status"] == "ok" else "")
            else:
                wall, mem, speed = r["status"], "", ""
            name = f"{builder}, {r['workers']} processes" if (r.get("workers") or 1) > 1 else builder
            lines.append(f"| {rows:,} | {r.get('csv_gb', 0):.2f} | {name} | {wall} | {mem} | {speed} | {r.get('same_as_fuxictr', '')} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, TAOBAO_TRAIN_ROWS])
    parser.add_argument("--quick", action="store_true", help="20,000 rows, both builders, into a temporary folder")
    parser.add_argument("--builders", nargs="+", default=["fuxictr", "streaming"], choices=BUILDERS)
    parser.add_argument("--validate", action="store_true", help="also time build_h5 (validation + streaming)")
    parser.add_argument("--scratch", default="/tmp/build_scale", help="CSVs and H5 output (never committed)")
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--chunk_rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=None, help="tokenizing processes of the streaming build "
                        "(default: the build's own, min(4, CPUs))")
    parser.add_argument("--timeout_min", type=float, default=40.0)
    parser.add_argument("--mem_cap_gb", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--keep", action="store_true", help="keep the H5 output")
    parser.add_argument("--generate_only", action="store_true", help="write the CSVs, build nothing")
    parser.add_argument("--table", action="store_true", help="print the table of the results folder and stop")
    parser.add_argument("--run-one", nargs=5, metavar=("BUILDER", "CSV_DIR", "OUT_ROOT", "CHUNK_ROWS", "WORKERS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        builder, folder, out_root, chunk_rows, workers = args.run_one
        return run_one(builder, folder, out_root, int(chunk_rows), int(workers))
    if args.table:
        print(table([json.load(open(p)) for p in sorted(glob.glob(os.path.join(args.results, "*.json")))]))
        return 0
    if args.quick:
        args.rows = [20_000]
    if args.workers is None:
        from interformer_fuxi.data import BUILD_WORKERS

        args.workers = BUILD_WORKERS
    builders = list(dict.fromkeys(args.builders + (["streaming+validate"] if args.validate else [])))
    mem_cap = min(args.mem_cap_gb * 2**30, 0.85 * mem_available())
    os.makedirs(args.results, exist_ok=True)
    print(f"machine: {machine()}; memory cap {mem_cap / 2**30:.1f} GB, timeout {args.timeout_min:.0f} min", flush=True)
    records, last_ok = [], {}
    for path in sorted(glob.glob(os.path.join(args.results, "*.json"))):  # earlier runs extrapolate too
        old = json.load(open(path))
        if old.get("status") == "ok" and old["rows"] < min(args.rows) and \
                old["rows"] > last_ok.get(old["builder"], {}).get("rows", 0):
            last_ok[old["builder"]] = old
    for rows in sorted(args.rows):
        folder = os.path.join(args.scratch, f"csv_{rows}")
        gen_s = generate(folder, rows, args.seed)
        csv_gb = sum(os.path.getsize(os.path.join(folder, f)) for f in ("train.csv", "test.csv")) / 2**30
        print(f"{rows:,} rows: CSVs {csv_gb:.2f} GB" + (f", generated in {gen_s:.0f} s" if gen_s else " (reused)"), flush=True)
        if args.generate_only:
            continue
        out_dirs = {}
        for builder in builders:
            record = {"rows": rows, "test_rows": int(round(rows * TEST_FRACTION)), "csv_gb": round(csv_gb, 3),
                      "machine": machine()}
            smaller = last_ok.get(builder)
            est_s, est_gb = extrapolate(smaller, rows) if smaller else (0, 0)
            if est_gb * 2**30 > mem_cap or est_s > args.timeout_min * 60:
                record.update(builder=builder, wall_s=None, peak_pss_gb=None, peak_rss_sum_gb=None,
                              status=f"not run: would need ~{est_gb:.0f} GB, ~{est_s / 60:.0f} min (from "
                                     f"{smaller['rows']:,} rows; caps {mem_cap / 2**30:.1f} GB, "
                                     f"{args.timeout_min:.0f} min)")
            else:
                out_root = os.path.join(args.scratch, f"out_{rows}_{builder.replace('+', '_')}")
                record.update(measure(builder, folder, out_root, args.chunk_rows, args.workers, args.timeout_min * 60,
                                      mem_cap))
                if record["status"] == "ok":
                    last_ok[builder] = record
                    out_dirs[builder] = os.path.join(out_root, "taobaoad_x1")
            if builder != "fuxictr" and "fuxictr" in out_dirs and builder in out_dirs:
                same, where = compare(out_dirs["fuxictr"], out_dirs[builder])
                record["same_as_fuxictr"] = "identical to FuxiCTR's" if same else f"DIFFERS: {where}"
            records.append(record)
            json.dump(record, open(os.path.join(args.results, f"{rows}_{builder.replace('+', '_')}.json"), "w"), indent=2)
            print(f"  {builder}: {record['status']}, {record['wall_s']} s, peak PSS {record.get('peak_pss_gb')} GB, "
                  f"RSS sum {record.get('peak_rss_sum_gb')} GB "
                  f"{record.get('same_as_fuxictr', '')}", flush=True)
        if not args.keep:
            for d in out_dirs.values():
                shutil.rmtree(os.path.dirname(d), ignore_errors=True)
        if args.quick:
            shutil.rmtree(folder, ignore_errors=True)
    print()
    print(table(records))
    failed = [r for r in records if r["status"] not in ("ok",) and not r["status"].startswith("not run")]
    return 1 if failed or any(str(r.get("same_as_fuxictr", "")).startswith("DIFFERS") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
