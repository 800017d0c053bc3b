"""Plotly figures of Runs. Every figure made on the simulated LLM says so in its title."""

from __future__ import annotations

from typing import Iterable, List

import pandas as pd
import plotly.graph_objects as go

SIMULATED_NOTE = "simulated LLM service"


def _title(text: str, runs: Iterable) -> str:
    return f"{text} ({SIMULATED_NOTE})" if any(run.simulated for run in runs) else text


def stage_breakdown(runs: List) -> go.Figure:
    """Busy seconds per stage for each run, next to its wall time."""
    fig = go.Figure()
    for run in runs:
        stages = run.stage_seconds()
        fig.add_bar(name=run.label, x=stages["stage"], y=stages["busy_s"])
    for run in runs:
        fig.add_hline(y=run.meta.get("wall_s") or 0, line_dash="dot", annotation_text=f"wall {run.label}")
    fig.update_layout(title=_title("Where the time goes: busy seconds per stage", runs), barmode="group", yaxis_title="seconds")
    return fig


def slot_occupancy(runs: List) -> go.Figure:
    """LLM requests holding a slot over time, against the service's K slots."""
    fig = go.Figure()
    for run in runs:
        steps = run.llm_slots_in_use()
        fig.add_scatter(x=steps["t_s"], y=steps["in_flight"], mode="lines", line_shape="hv", name=run.label)
    slots = max((run.meta.get("slots") or 0) for run in runs) if runs else 0
    fig.add_hline(y=slots, line_dash="dash", annotation_text=f"K = {slots} slots")
    fig.update_layout(title=_title("LLM slots in use over time", runs), xaxis_title="seconds since start", yaxis_title="requests in a slot")
    return fig


def slot_occupancy_facets(runs: List) -> go.Figure:
    """LLM slots in use over time, one panel per run side by side, each against its K."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(runs), shared_yaxes=True, subplot_titles=[run.label for run in runs])
    for col, run in enumerate(runs, start=1):
        for trace in slot_occupancy([run]).data:
            fig.add_trace(trace.update(showlegend=False), row=1, col=col)
        fig.add_hline(y=run.meta["slots"], line_dash="dash", annotation_text=f"K = {run.meta['slots']}", row=1, col=col)
        fig.update_xaxes(title_text="seconds since start", row=1, col=col)
    fig.update_layout(title=_title("LLM slots in use over time", runs), yaxis_title="requests in a slot")
    return fig


def staircase(stairs: pd.DataFrame) -> go.Figure:
    """docs/min and wall / limit after each step of ``ragopt.measure.steps.staircase``."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("docs/min", "wall / LLM-bound limit"))
    fig.add_bar(x=stairs["label"], y=stairs["docs_per_min"], showlegend=False, row=1, col=1)
    fig.add_bar(x=stairs["label"], y=stairs["wall_over_limit"], showlegend=False, row=1, col=2)
    simulated = bool(stairs["simulated_llm"].all()) if len(stairs) else False
    title = "One optimization more at each step"
    fig.update_layout(title=f"{title} ({SIMULATED_NOTE})" if simulated else title)
    return fig


def rss_timeline(runs: List) -> go.Figure:
    """Resident memory of the process and its children (parse pool, embedding worker) over time."""
    fig = go.Figure()
    for run in runs:
        resources = run.resources
        if resources.empty:
            continue
        fig.add_scatter(x=resources["t_s"], y=resources["total_rss_mb"], mode="lines", name=run.label)
    fig.update_layout(title=_title("RSS over time", runs), xaxis_title="seconds since start", yaxis_title="MB")
    return fig


def cpu_timeline(runs: List) -> go.Figure:
    """CPU use of the process tree, 100% = all cores busy."""
    fig = go.Figure()
    for run in runs:
        if not run.resources.empty:
            fig.add_scatter(x=run.resources["t_s"], y=run.resources["cpu_pct"], mode="lines", name=run.label)
    fig.update_layout(title=_title("CPU % of all cores", runs), xaxis_title="seconds since start", yaxis_title="%")
    return fig


def variant_bars(spread: pd.DataFrame, metric: str, label: str, simulated: bool) -> go.Figure:
    """Mean of ``metric`` per variant with ± one standard deviation (``ragopt.measure.ablation.spread``)."""
    mean, std, n = spread["mean"][metric], spread["std"][metric].fillna(0), spread["n"][metric]
    fig = go.Figure(go.Bar(x=list(mean.index), y=list(mean), error_y={"type": "data", "array": list(std), "visible": True}))
    title = f"{label} per variant, mean ± std over {int(n.max()) if len(n) else 0} repeat(s)"
    fig.update_layout(title=f"{title} ({SIMULATED_NOTE})" if simulated else title, yaxis_title=label)
    return fig


def summary_table(frame: pd.DataFrame, title: str = "") -> go.Figure:
    """A DataFrame (e.g. ``experiments.compare_runs``) as a plotly table."""
    shown = frame.reset_index().astype(object).where(frame.reset_index().notna(), "n/a (not measured)")
    cells = [[_fmt(v) for v in shown[c]] for c in shown.columns]
    fig = go.Figure(go.Table(header={"values": [str(c) for c in shown.columns]}, cells={"values": cells, "align": "left"}))
    fig.update_layout(title=title)
    return fig


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
