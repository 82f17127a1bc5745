"""InterFormer's ONNX graph with the attention's padding mask added (shipped) or selected (boolean).

    python benchmarks/onnx_mask.py --dataset movielens1m_x1_u1000
    python benchmarks/onnx_mask.py --dataset movielens1m_x1_u1000 --threads 2 --rounds 40

``scaled_dot_product_attention`` given a boolean ``attn_mask`` exports as selects and NaN
checks over every ``[B, H, N, N]`` score; the export hands it an additive float mask instead
(``layers/attention.py``, ``onnx_additive_mask``). This script exports ``InterFormer_amazon``
on ``--dataset``'s feature map both ways, checks that the two graphs score alike, and times
them side by side in one process, rounds interleaved so that drift hits both: the latency of
one request (batch 1, p50 over ``--rounds`` × 20 requests) and the time per batch of 1,024
(median over ``--rounds``), requests drawn from the test split as in
``benchmarks/inference.py``. Prints a Markdown table, writes
``benchmarks/results/inference/<dataset>_onnx_mask.json``; the last line is
``RESULT onnx_mask_batch1=…x onnx_mask_batch1024=…x`` (boolean time over additive time).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import inference  # noqa: E402

from interformer_fuxi.atomic import atomic_write  # noqa: E402
from interformer_fuxi.export import export  # noqa: E402
from interformer_fuxi.layers.attention import set_onnx_mask_form  # noqa: E402
from interformer_fuxi.serving import ServingModel  # noqa: E402

FORMS = ("additive", "boolean")


def sessions(model, work_dir, threads):
    """``{form: (session, op counts)}``: the model exported with each form of the mask."""
    import onnx
    import onnxruntime as ort

    serving = ServingModel(model).eval()
    out = {}
    for form in FORMS:
        set_onnx_mask_form(serving, additive=form == "additive")
        path = os.path.join(work_dir, form)
        export(serving, "onnx", path)
        ops = [node.op_type for node in onnx.load(os.path.join(path, "model.onnx")).graph.node]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(os.path.join(path, "model.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        out[form] = (session, {op: ops.count(op) for op in ("Where", "IsNaN", "Add")})
    return serving.input_names, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="tiny_amazon", help="a dataset_id of config/dataset_config.yaml")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime's intra-op threads")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", default=os.path.join(inference.REPO, "benchmarks", "results", "inference"))
    args = parser.parse_args(argv)

    _, model, rows = inference.load(args.dataset, inference.MODELS["InterFormer"])
    with tempfile.TemporaryDirectory() as work_dir:
        names, graphs = sessions(model, work_dir, args.threads)
        feeds = {size: [{n: t.numpy() for n, t in zip(names, x)}
                        for x in inference.requests(model, rows, size, count, seed=size)]
                 for size, count in ((1, 20), (1024, 1))}
        a, b = (graphs[f][0].run(["score"], feeds[1024][0])[0] for f in FORMS)
        gap = float(np.abs(a - b).max())
        assert gap < 1e-5, f"the two graphs disagree by {gap:.2e}"
        times = {f: {1: [], 1024: []} for f in FORMS}
        for _ in range(args.rounds):
            for form in FORMS:
                session = graphs[form][0]
                for size, reqs in feeds.items():
                    for feed in reqs:
                        start = time.perf_counter()
                        session.run(["score"], feed)
                        times[form][size].append((time.perf_counter() - start) * 1e3)
    res = {"dataset": args.dataset, "ort_threads": args.threads, "rounds": args.rounds, "max_abs_gap": gap,
           "forms": {f: {"ops": graphs[f][1], "p50_ms_b1": float(np.median(times[f][1][20:])),
                         "median_ms_b1024": float(np.median(times[f][1024][1:]))} for f in FORMS}}
    os.makedirs(args.out, exist_ok=True)
    with atomic_write(os.path.join(args.out, f"{args.dataset}_onnx_mask.json")) as f:
        json.dump(res, f, indent=2)
    print(f"\nInterFormer_amazon on {args.dataset}, ONNX Runtime, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds; the graphs agree within {gap:.1e}\n")
    print("| mask | Where / IsNaN / Add nodes | p50 ms, batch 1 | ms per batch of 1,024 |")
    print("|---|---|---|---|")
    for form in FORMS:
        r = res["forms"][form]
        print(f"| {form} | {r['ops']['Where']} / {r['ops']['IsNaN']} / {r['ops']['Add']} | "
              f"{r['p50_ms_b1']:.2f} | {r['median_ms_b1024']:.0f} |")
    add, boolean = res["forms"]["additive"], res["forms"]["boolean"]
    print(f"RESULT onnx_mask_batch1={boolean['p50_ms_b1'] / add['p50_ms_b1']:.2f}x "
          f"onnx_mask_batch1024={boolean['median_ms_b1024'] / add['median_ms_b1024']:.2f}x")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
