"""``ctq report`` and ``ctq compare``: what a run did, read back from the catalog.

The report is one self-contained HTML file: the leaderboard, the search's decisions (ASHA: which
model went on or stopped at each rung, and why), each model's learning curves, the timeline of hops with one lane per segment (MOP's asynchrony, or BSP's idle gaps, show as the
white space between hops), per-segment utilization, and the run's configuration and provenance.
Plots are drawn by matplotlib as inline SVG with text kept as text (``svg.fonttype: none``):
nothing to fetch when viewing, and the figures stay searchable and parseable.

The numbers come from the catalog views of ``views.sql`` (``ctq.leaderboard``,
``ctq.learning_curves``, ``ctq.segment_utilization``), which filter on their reader as the
row-level security of the run tables does.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import io
import json
import re
from dataclasses import dataclass

import yaml

from ctq import __version__, catalog
from ctq.config import effective
from ctq.metrics import Metric
from ctq.rules import PackStats
from ctq.sql import template

COLOURS = "tab20"  # matplotlib's qualitative map: 20 distinguishable colours (beyond: model_colours)
FULL_CURVES = 12  # models (best first) whose learning curves the report draws in full; the rest summarised


@dataclass
class RunData:
    """Everything a report or a comparison shows of one run (rows as the catalog returns them)."""

    run: dict  # report_run.sql, with config and versions parsed
    leaderboard: list[dict]  # catalog.leaderboard, best first
    curves: dict[int, list[dict]]  # model_id -> epochs (1-based), from ctq.learning_curves
    hops: list[dict]  # in the order they started
    segments: list[dict]  # ctq.segment_utilization, one row per segment that ran a hop
    pack: dict | None  # the ctq.packs row, None if the caller cannot see it (its source unreadable)
    decisions: list[dict] = dataclasses.field(default_factory=list)  # the search's, in the order made

    @property
    def task(self) -> str:
        return self.run["config"].get("data", {}).get("task", "classification")

    @property
    def metric_name(self) -> str:
        """The metric in ctq.models.train_metric/val_metric: the run's auc, f1... or accuracy, mae."""
        return Metric(self.run["metric"]).compiled(self.task)

    @property
    def span_seconds(self) -> float | None:
        """The hop schedule's span: from the first hop's start to the last hop's end."""
        return catalog.schedule_shares(self.segments, self.run["segments"])["span_seconds"]

    @property
    def utilization(self) -> float | None:
        """The share of segment time spent in hops over the span (catalog.schedule_shares)."""
        return catalog.schedule_shares(self.segments, self.run["segments"])["utilization"]

    @property
    def compute_share(self) -> float | None:
        """The share of segment time Keras computed over the span (catalog.schedule_shares)."""
        return catalog.schedule_shares(self.segments, self.run["segments"])["compute_share"]

    @property
    def best(self) -> dict | None:
        return next((row for row in self.leaderboard if row["score"] is not None), None)


async def load(conn, run_id: int) -> RunData:
    """Read one run; NotFound when it does not exist or the caller may not see it."""
    if not await catalog.check_access(conn):
        raise await catalog.missing_run(conn, str(run_id))
    row = await conn.fetchrow(catalog.run_sql("report_run.sql"), run_id)
    if row is None:
        raise await catalog.missing_run(conn, str(run_id))
    run = dict(row)
    run["config"] = json.loads(run["config"])
    run["versions"] = json.loads(run["versions"]) if run["versions"] else {}
    curves: dict[int, list[dict]] = {}
    for r in await conn.fetch(template("report_curves.sql"), run_id):
        curves.setdefault(r["model_id"], []).append(dict(r))
    pack = await conn.fetchrow(template("report_pack.sql"), run["pack_id"])
    if pack is not None:
        pack = dict(pack)
        pack["stats"], pack["settings"] = PackStats.from_dict(json.loads(pack["stats"])), json.loads(pack["settings"])
    return RunData(
        run=run, leaderboard=await catalog.leaderboard(conn, run_id), curves=curves,
        hops=[dict(r) for r in await conn.fetch(template("report_hops.sql"), run_id)],
        segments=await catalog.segment_rows(conn, run_id), pack=pack,
        decisions=[dict(r) for r in await conn.fetch(template("run_decisions.sql"), run_id)],
    )


# ------------------------------------------------------------------------------------- compare
def summary(data: RunData) -> dict:
    """One run's headline figures (``ctq compare``, one column per run)."""
    run, best = data.run, data.best
    return {
        "run_id": run["run_id"], "name": run["name"], "status": run["status"], "schedule": run["schedule"],
        "engine": run["engine"], "run_by": run["run_by"], "started_at": run["started_at"],
        "source_table": run["source_table"], "pack_id": run["pack_id"], "segments": run["segments"],
        "epochs": run["epochs"], "models": len(data.leaderboard), "metric": run["metric"],
        "best_model_id": best["model_id"] if best else None, "best_model": best["name"] if best else None,
        "best_score": best["score"] if best else None, "hops": run["hops"],
        "wall_seconds": run["wall_seconds"], "schedule_seconds": data.span_seconds,
        "segment_utilization": data.utilization, "compute_share": data.compute_share,
    }


def flatten(value, prefix: str = "") -> dict[str, object]:
    """A configuration as ``{"models[0].layers[1].dense": 256, ...}`` (dicts by key, lists by index)."""
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def config_differences(a: dict, b: dict) -> list[dict]:
    """Keys whose values differ between two configurations (``None`` where a key is missing: a
    key set to null, as config.effective writes an unset one, is no difference from none)."""
    fa, fb = flatten(a), flatten(b)
    return [{"key": key, "a": fa.get(key), "b": fb.get(key)}
            for key in sorted(set(fa) | set(fb), key=_natural) if fa.get(key) != fb.get(key)]


def _natural(key: str) -> list:
    """Sort key in which the numbers inside a name count as numbers: features[2] before features[10]."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", key)]


def settings(data: RunData) -> dict:
    """What a run was asked to do: its configuration, defaults filled in (config.effective), with
    the name and schedule it ran under (``--name`` and ``--schedule`` are not part of the grid file)."""
    return {**effective(data.run["config"]), "name": data.run["name"], "schedule": data.run["schedule"]}


def compare(a: RunData, b: RunData) -> dict:
    return {"runs": [summary(a), summary(b)], "config_differences": config_differences(settings(a), settings(b))}


# -------------------------------------------------------------------------------------- report
def model_colours(model_ids) -> dict[int, str]:
    """A colour per model (by model id order), the same in the timeline, the curves and the table."""
    import matplotlib
    from matplotlib.colors import to_hex

    ordered = sorted(model_ids)
    cmap = matplotlib.colormaps[COLOURS]
    if len(ordered) <= cmap.N:
        return {m: to_hex(cmap(i)) for i, m in enumerate(ordered)}
    # more models than the map's colours: hues a golden angle apart, so that no two repeat
    from colorsys import hls_to_rgb

    return {m: to_hex(hls_to_rgb((i * 0.381966) % 1.0, 0.45 + 0.15 * (i % 3) / 2, 0.65))
            for i, m in enumerate(ordered)}


def _svg(fig) -> str:
    """A matplotlib figure as an inline ``<svg>`` element (no XML prolog, text as text)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ctq"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def curves_svg(data: RunData, model_id: int, name: str, colour: str) -> str:
    """Loss and metric per epoch, training (solid) and validation (dashed), of one model. Line ids:
    ``train-loss-M``, ``val-loss-M``, ``train-metric-M``, ``val-metric-M``."""
    from matplotlib.figure import Figure

    rows = data.curves.get(model_id, [])
    fig = Figure(figsize=(5.6, 2.3))
    epochs = [r["epoch"] for r in rows]
    for ax, what, label in zip(fig.subplots(1, 2), ("loss", "metric"), ("loss", data.metric_name)):
        for split, style in (("train", "-"), ("val", "--")):
            points = [(e, r[f"{split}_{what}"]) for e, r in zip(epochs, rows) if r[f"{split}_{what}"] is not None]
            (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", markersize=3,
                              color=colour, label="training" if split == "train" else "validation")
            line.set_gid(f"{split}-{what}-{model_id}")
        _epoch_axis(ax, label, epochs)
    return _finish(fig, f"model {model_id}: {name}")


def _epoch_axis(ax, label: str, epochs: list[int]) -> None:
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    from matplotlib.ticker import MaxNLocator

    ax.set_xticks(epochs or [1]) if len(epochs) <= 12 else ax.xaxis.set_major_locator(MaxNLocator(8, integer=True))
    ax.grid(alpha=0.3)


def _finish(fig, title: str) -> str:
    """The curves figure's legend (on its first axes) and title, as SVG."""
    fig.axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _svg(fig)


def spread_svg(data: RunData, best: list[int], colours: dict[int, str]) -> str:
    """Validation loss and metric per epoch over every model that completed the epoch: the range
    (min to max, light), the quartiles (darker) and the median (group ids ``range-loss``,
    ``quartiles-loss``, ``median-loss``, the same with ``metric``), with the ``best`` models' own
    validation lines on top (``val-loss-M``, ``val-metric-M``). One figure whatever the number of
    models, as Optuna's intermediate-values plot gives one view of many trials."""
    import numpy as np
    from matplotlib.figure import Figure

    by_epoch: dict[int, dict[str, list[float]]] = {}
    for rows in data.curves.values():
        for r in rows:
            for what in ("loss", "metric"):
                if r[f"val_{what}"] is not None:
                    by_epoch.setdefault(r["epoch"], {"loss": [], "metric": []})[what].append(r[f"val_{what}"])
    epochs = sorted(by_epoch)
    fig = Figure(figsize=(11, 3))
    for ax, what, label in zip(fig.subplots(1, 2), ("loss", "metric"), ("validation loss", f"val {data.metric_name}")):
        shown = [e for e in epochs if by_epoch[e][what]]
        q = np.array([np.quantile(by_epoch[e][what], [0, 0.25, 0.5, 0.75, 1]) for e in shown]).reshape(-1, 5)
        ax.fill_between(shown, q[:, 0], q[:, 4], color="#1f77b4", alpha=0.15, linewidth=0).set_gid(f"range-{what}")
        ax.fill_between(shown, q[:, 1], q[:, 3], color="#1f77b4", alpha=0.35, linewidth=0).set_gid(f"quartiles-{what}")
        ax.plot(shown, q[:, 2], color="#1f77b4", label="median of all models")[0].set_gid(f"median-{what}")
        for m in best:
            points = [(r["epoch"], r[f"val_{what}"]) for r in data.curves.get(m, []) if r[f"val_{what}"] is not None]
            line = ax.plot([p[0] for p in points], [p[1] for p in points], color=colours[m], linewidth=0.8)[0]
            line.set_gid(f"val-{what}-{m}")
        _epoch_axis(ax, label, shown)
    return _finish(fig, f"all {len(data.curves)} models with a completed epoch: range, quartiles and median per "
                        f"epoch; lines: the {len(best)} best")


def timeline_svg(data: RunData, colours: dict[int, str], names: dict[int, str]) -> str:
    """Every hop as a bar from its start to its end on its segment's lane (group id ``lane-K``),
    coloured by model; time in seconds since the run's first hop started."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    segments = range(data.run["segments"])
    fig = Figure(figsize=(11, 0.5 * len(segments) + 1.6))
    ax = fig.subplots()
    t0 = min(h["started_at"] for h in data.hops) if data.hops else None
    busy = {s["segment"]: s["utilization"] for s in data.segments}
    for seg in segments:
        hops = [h for h in data.hops if h["segment"] == seg]
        bars = [((h["started_at"] - t0).total_seconds(), (h["finished_at"] - h["started_at"]).total_seconds())
                for h in hops]
        lane = ax.broken_barh(bars, (seg - 0.4, 0.8), facecolors=[colours[h["model_id"]] for h in hops],
                              edgecolor="white", linewidth=0.5)
        lane.set_gid(f"lane-{seg}")
    ax.set_yticks(list(segments))
    ax.set_yticklabels([f"segment {s}\n{busy[s]:.0%} busy" if busy.get(s) is not None else f"segment {s}\nidle"
                        for s in segments], fontsize=8)
    ax.set_ylim(len(segments) - 0.5, -0.5)
    ax.set_xlabel("seconds since the first hop started")
    ax.grid(axis="x", alpha=0.3)
    if len(colours) <= 20:
        ax.legend(handles=[Patch(color=colours[m], label=f"{m} {names[m]}") for m in sorted(colours)],
                  loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
    ax.set_title(f"hops per segment, schedule {data.run['schedule']}: white space is a segment waiting", fontsize=9)
    fig.tight_layout()
    return _svg(fig)


def _num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, ".6g")
    return html.escape(str(value))


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if value is not None else "-"


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.name { white-space: nowrap; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; vertical-align: -0.1em; }
.status { padding: 0 0.4em; border-radius: 3px; background: #e4e4e4; }
.status-succeeded { background: #d5f0d5; } .status-failed { background: #f6d2d2; }
.status-running, .status-training { background: #d8e6fa; }
.status-stale, .status-interrupted { background: #f8ebc8; }
.curves { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } svg { max-width: 100%; height: auto; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }
.message { color: #a00; }
"""


def _status(value: str) -> str:
    """A status as a label; one ctq does not know (a newer version's) shows as it is, in grey."""
    safe = "".join(ch for ch in str(value) if ch.isalnum() or ch in "-_")
    return f'<span class="status status-{safe}">{html.escape(str(value))}</span>'


def render_html(data: RunData, generated_at: datetime.datetime | None = None, full_curves: int = FULL_CURVES) -> str:
    """The report as one HTML document; every value from the catalog is escaped. The learning
    curves of the ``full_curves`` best models are drawn in full, one figure each; with more models,
    one more figure summarises them all (:func:`spread_svg`), so the report's size and time grow
    with the models only through the leaderboard's rows and the timeline's bars."""
    run = data.run
    generated_at = generated_at or datetime.datetime.now(datetime.timezone.utc)
    names = {row["model_id"]: row["name"] for row in data.leaderboard}
    colours = model_colours(names)
    esc = html.escape
    title = f"ctq run {run['run_id']} ({run['name']})"
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
           f"<style>{CSS}</style></head><body>",
           f"<h1>{esc(title)} {_status(run['status'])}</h1>"]
    if run["message"]:
        out.append(f'<p class="message">{esc(run["message"])}</p>')
    best = data.best
    util = data.utilization
    out.append(f"<p>{len(data.leaderboard)} models x {run['segments']} segments x {run['epochs']} epochs, "
               f"schedule {esc(run['schedule'])}: {run['hops']} hops in {run['wall_seconds']:.1f} s"
               + (f", segment utilization {util:.1%}, compute share {data.compute_share:.1%}"
                  if util is not None else "")
               + (f"; best {esc(run['metric'])} = {_num(best['score'])} ({esc(best['name'])})" if best else "")
               + "</p>")

    out.append(f"<h2>Leaderboard</h2><p>ranked by {esc(run['metric'])} ({esc(run['metric_mode'])}imum), ties "
               "by validation loss</p>")
    cols = [("rank", "rank"), ("model_id", "model"), ("name", "name"), ("status", "status"),
            ("epochs_done", "epochs"), ("score", run["metric"]), ("train_loss", "train loss"),
            ("train_metric", f"train {data.metric_name}"), ("val_loss", "val loss"),
            ("val_metric", f"val {data.metric_name}"), ("hyperparameters", "hyperparameters")]
    if run["metric"] == f"val_{data.metric_name}":  # the score is the val metric: one column, not two
        cols = [c for c in cols if c[0] != "val_metric"]
    out.append('<table id="leaderboard"><thead><tr>' + "".join(f"<th>{esc(label)}</th>" for _, label in cols)
               + "</tr></thead><tbody>")
    for row in data.leaderboard:
        cells = []
        for key, _ in cols:
            value = row[key]
            if key == "name":
                text = f'<span class="swatch" style="background:{colours[row["model_id"]]}"></span>{esc(value)}'
            elif key == "status":
                text = _status(value)
            elif key == "hyperparameters":
                text = esc(", ".join(f"{k}={v}" for k, v in value.items() if v is not None))
            else:
                text = _num(value)
            css = {"name": ' class="name"', "status": "", "hyperparameters": ""}.get(key, ' class="n"')
            cells.append(f'<td data-key="{key}"{css}>{text}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")

    if data.decisions:
        out.append(f"<h2>Search decisions</h2><p>{esc(run['config'].get('search', {}).get('method', ''))}: "
                   "after each rung's epoch a model goes on or is stopped, in this order</p>")
        out.append('<table id="decisions"><thead><tr><th>#</th><th>model</th><th>name</th><th>rung</th>'
                   f"<th>epoch</th><th>{esc(run['metric'])}</th><th>decision</th><th>why</th></tr></thead><tbody>")
        for d in data.decisions:
            out.append(f'<tr><td class="n" data-key="seq">{d["seq"]}</td>'
                       f'<td class="n" data-key="model_id">{d["model_id"]}</td>'
                       f'<td class="name">{esc(names.get(d["model_id"], ""))}</td>'
                       f'<td class="n" data-key="rung">{d["rung"]}</td><td class="n" data-key="epoch">{d["epoch"]}</td>'
                       f'<td class="n" data-key="value">{_num(d["value"])}</td>'
                       f'<td data-key="decision">{esc(d["decision"])}</td><td>{esc(d["reason"])}</td></tr>')
        out.append("</tbody></table>")

    out.append("<h2>Hops</h2>")
    if data.hops:
        out.append(f'<figure id="timeline">{timeline_svg(data, colours, names)}</figure>')
        out.append('<table id="segments"><thead><tr><th>segment</th><th>hops</th><th>busy s</th>'
                   "<th>training s</th><th>utilization</th><th>compute share</th></tr></thead><tbody>")
        for s in data.segments:
            out.append(f'<tr><td class="n">{s["segment"]}</td><td class="n">{s["hops"]}</td>'
                       f'<td class="n">{_num(s["busy_seconds"])}</td><td class="n">{_num(s["compute_seconds"])}</td>'
                       f'<td class="n">{_num(s["utilization"])}</td>'
                       f'<td class="n">{_num(s["compute_share"])}</td></tr>')
        out.append(f"</tbody></table><p>span of the hop schedule: {_num(data.span_seconds)} s (first hop's start "
                   "to last hop's end); busy: from each hop's start to its state being stored, in the server; "
                   "training: Keras' training and evaluating within it</p>")
    else:
        out.append("<p>no hop recorded yet</p>")

    shown = data.leaderboard[:max(0, full_curves)]
    rest = len(data.leaderboard) - len(shown)
    out.append('<h2>Learning curves</h2><p>per epoch: training (solid, over the epoch\'s hops) and validation '
               "(dashed, after the epoch)" + (f"; the {len(shown)} best models in full, all {len(data.leaderboard)} "
                                             "in the first figure (ctq report --curves N draws more)" if rest else "")
               + '</p><div class="curves">')
    if rest and data.curves:
        out.append(f'<figure id="curves-summary">{spread_svg(data, [r["model_id"] for r in shown], colours)}</figure>')
    for row in shown:
        m = row["model_id"]
        if data.curves.get(m):
            body = curves_svg(data, m, row["name"], colours[m])
        else:
            body = f"<p>model {m} ({esc(row['name'])}): no completed epoch</p>"
        out.append(f'<figure class="curve" data-model-id="{m}">{body}</figure>')
    out.append("</div>")

    out.append('<h2>Provenance</h2><table id="provenance"><tbody>')
    versions = ", ".join(f"{k} {v}" for k, v in sorted(run["versions"].items())) or "-"
    pack = data.pack
    facts = [
        ("run by", run["run_by"]), ("client host", run["client_host"] or "-"),
        ("started", _when(run["started_at"])), ("finished", _when(run["finished_at"])),
        ("wall time", f"{run['wall_seconds']:.1f} s"), ("versions", versions), ("engine", run["engine"]),
        ("schedule", run["schedule"]), ("segments", run["segments"]),
        ("cores per segment", run["cores_per_segment"] or "-"), ("seed", run["seed"]),
        ("source table", run["source_table"]), ("pack", run["pack_id"]),
        ("configuration fingerprint", run["config_fingerprint"]),
    ]
    if pack is not None:
        stats = pack["stats"]
        facts += [("pack table", pack["table_name"]), ("packed by", pack["packed_by"]),
                  ("packed", _when(pack["created_at"])), ("source fingerprint", pack["source_fingerprint"]),
                  ("rows", f"{stats.rows} ({stats.train_rows} training, {stats.validation_rows} validation)")]
        if stats.class_values:
            facts.append(("classes", ", ".join(str(v).lower() if isinstance(v, bool) else str(v)
                                               for v in stats.class_values)))
    facts.append(("report", f"{_when(generated_at)}, ctq {__version__}"))
    for key, value in facts:
        out.append(f"<tr><th>{esc(key)}</th><td>{esc(str(value))}</td></tr>")
    out.append("</tbody></table>")
    out.append('<h2>Configuration</h2><pre id="config">'
               + esc(yaml.safe_dump(run["config"], sort_keys=False, default_flow_style=None)) + "</pre>")
    out.append("</body></html>\n")
    return "\n".join(out)
