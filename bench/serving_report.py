"""The tables and the goals of bench/serving_bench.py, from its measured rows.

Every rate goal is printed as a ratio to the bare session callable measured in the same run (the
in-process limit of the server's own path), so figures from a busy or a faster machine stay comparable.
"""
CALLABLE, PREDICT = "session callable", "LoadedModel.predict"
REST_VS_CALLABLE = 0.5  # REST, 1 image/request, 16 connections: at least this x callable batch-1 calls/s
P99_MS = 5.0  # ... with p99 at most this
GRPC_VS_REST = 1.0  # gRPC, 1 image/request, 16 connections: at least this x REST's req/s
BIG_IMAGES_S = 100_000  # REST, 100 images/request (best connection count): images/s
RSS_MB = 700  # peak RSS (VmHWM) of every serving process, one version loaded
GOAL_CONNECTIONS = 16


def print_in_process(inproc):
    print("\nin-process, one thread, the server's path (rates every goal is compared with):")
    for path in (CALLABLE, PREDICT):
        r = inproc[path]
        print(f"  {path:20} batch 1: {r[1]:9,.0f} calls/s ({1e6 / r[1]:6.1f} µs)   batch 100: {r[100]:7,.0f} calls/s "
              f"= {r[100] * 100:9,.0f} images/s ({1e6 / r[100]:6.1f} µs)")


def print_table(inproc, rows):
    limit = {1: inproc[CALLABLE][1], 100: inproc[CALLABLE][100] * 100}
    print(f"\n{'server':13} {'proto':5} {'batch':5} {'img/req':>7} {'conn':>4} {'req/s':>8} {'images/s':>9} "
          f"{'x call':>6} {'p50 ms':>7} {'p99 ms':>7} {'procs':>5} {'RSS max':>7} {'sum MB':>6} "
          f"{'CPU% srv':>8} {'gen':>4} {'other':>5} {'errors':>6}")
    for r in rows:
        print(f"{r['server']:13} {r['protocol']:5} {'on' if r['batching'] else 'off':5} {r['images_per_request']:7} "
              f"{r['connections']:4} {r['req_s']:8.0f} {r['images_s']:9.0f} "
              f"{r['images_s'] / limit[r['images_per_request']]:6.2f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} "
              f"{r['processes']:5} {r['rss_max_mb']:7.0f} {r['rss_sum_mb']:6.0f} {r['server_cpu_pct']:8.0f} "
              f"{r['generator_cpu_pct']:4.0f} {r['other_cpu_pct']:5.0f} {r['errors']:6}")
    print("(x call: images/s over the session callable's in-process images/s at the same images per call.\n"
          " procs, RSS max, sum MB: the server's processes (it and its children) and their peak RSS (VmHWM).\n"
          " CPU%: of one core, 200 = both; srv = the server's process tree, gen = the load generator,\n"
          " other = the rest of the machine, should be ~0)")
    noisy = [r for r in rows if r["other_cpu_pct"] > 20]
    if noisy or any(r["errors"] for r in rows):
        print(f"WARNING: {len(noisy)} points ran beside other work (>20% CPU), {sum(r['errors'] for r in rows)} "
              f"errors: figures are not clean")


def _row(rows, protocol, batching, per_request, connections, server="model server"):
    return next((r for r in rows if (r["server"], r["protocol"], r["batching"], r["images_per_request"],
                                     r["connections"]) == (server, protocol, batching, per_request, connections)), None)


def evaluate_goals(inproc, rows):
    """[{mode, goal, value, target, unit, met, detail}] for each batching mode measured; printed."""
    call1, call100 = inproc[CALLABLE][1], inproc[CALLABLE][100] * 100
    goals = []

    def goal(mode, text, value, target, unit, detail=""):
        met = value <= target if unit in ("ms", "MB") else value >= target
        goals.append({"mode": mode, "goal": text, "value": value, "target": target, "unit": unit, "met": met,
                      "detail": detail})

    for batching in sorted({r["batching"] for r in rows if r["server"] == "model server"}):
        mode = "batching " + ("on" if batching else "off")
        rest, grpc_ = (_row(rows, p, batching, 1, GOAL_CONNECTIONS) for p in ("REST", "gRPC"))
        if rest:
            goal(mode, f"REST 1 img/req, {GOAL_CONNECTIONS} conn >= {REST_VS_CALLABLE}x session callable batch 1",
                 rest["req_s"] / call1, REST_VS_CALLABLE, "x", f"{rest['req_s']:,.0f} req/s vs {call1:,.0f} calls/s")
            goal(mode, f"REST 1 img/req, {GOAL_CONNECTIONS} conn: p99 <= {P99_MS:g} ms", rest["p99_ms"], P99_MS, "ms")
        if rest and grpc_:
            goal(mode, f"gRPC 1 img/req, {GOAL_CONNECTIONS} conn >= {GRPC_VS_REST}x REST",
                 grpc_["req_s"] / rest["req_s"], GRPC_VS_REST, "x",
                 f"{grpc_['req_s']:,.0f} req/s = {grpc_['req_s'] / call1:.2f}x session callable")
        big = [r for r in rows if r["server"] == "model server" and r["protocol"] == "REST"
               and r["batching"] == batching and r["images_per_request"] == 100]
        if big:
            best = max(big, key=lambda r: r["images_s"])
            goal(mode, f"REST 100 img/req >= {BIG_IMAGES_S:,} images/s", best["images_s"], BIG_IMAGES_S, "images/s",
                 f"{best['images_s'] / call100:.2f}x session callable batch 100; best at {best['connections']} conn")
        served = [r for r in rows if r["server"] == "model server" and r["batching"] == batching]
        peak = max(served, key=lambda r: r["rss_max_mb"])
        goal(mode, f"peak RSS <= {RSS_MB} MB per serving process (one version)", peak["rss_max_mb"], RSS_MB, "MB",
             f"{peak['processes']} processes, sum {max(r['rss_sum_mb'] for r in served):,.0f} MB")
    print(f"\ngoals (x: ratio to the session callable of this run, {call1:,.0f} calls/s at batch 1, "
          f"{call100:,.0f} images/s at batch 100):")
    for g in goals:
        detail = f"  ({g['detail']})" if g["detail"] else ""
        value = f"{g['value']:.2f}x" if g["unit"] == "x" else \
            f"{g['value']:,.{2 if g['unit'] == 'ms' else 0}f} {g['unit']}"
        print(f"  {'PASS' if g['met'] else 'MISS'} [{g['mode']:12}] {g['goal']}: {value}{detail}")
    naive, rest = _row(rows, "REST", False, 1, GOAL_CONNECTIONS, "naive FastAPI"), \
        _row(rows, "REST", False, 1, GOAL_CONNECTIONS)
    if naive and rest:
        print(f"  (for reference: REST 1 img/req, {GOAL_CONNECTIONS} conn is {rest['req_s'] / naive['req_s']:.2f}x "
              f"the naive FastAPI server)")
    return goals
